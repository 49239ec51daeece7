# A same-size MREMAP_FIXED move whose old address is unmapped fails with EFAULT even when the range holds VMAs further on.
mmap a 64K
mmap b 64K none
touch a 0 64K w
munmap a 0 16K
mremap a 0 64K 64K maymove fixed b 0
dump b
mremap a 0 16K 16K maymove fixed b 0
