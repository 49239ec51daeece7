# MREMAP_FIXED may grow while moving: the destination holds the old pages and a none tail.
mmap a 64K
mmap b 128K none
touch a 0 64K w
mremap a 0 64K 128K maymove fixed b 0
dump a
