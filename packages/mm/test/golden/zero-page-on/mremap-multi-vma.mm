# A same-size MREMAP_FIXED move may take several VMAs along, and the holes between them stay holes.
mmap a 64K
mmap b 64K none
touch a 0 64K w
mprotect a 16K 16K r
munmap a 40K 8K
mremap a 0 64K 64K maymove fixed b 0
dump b
mremap a 0 64K 128K maymove
