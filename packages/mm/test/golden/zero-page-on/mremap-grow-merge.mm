# Growing in place up to the next VMA merges with it when they are compatible; a later grow then has no room.
mmap a 64K
touch a 0 32K w
munmap a 32K 16K
mremap a 0 32K 48K
dump a
mremap a 0 64K 80K
