# MREMAP_FIXED may shrink while moving: the tail is unmapped first and the destination's rest of its region stays.
mmap a 64K
mmap b 128K
touch a 0 64K w
touch b 0 128K w
mremap a 0 64K 32K maymove fixed b 0
dump a
dump b
