# MREMAP_FIXED moves a range onto another region, replacing what is mapped there; the source becomes unmapped.
mmap a 64K
mmap b 64K
touch a 0 64K w
touch b 0 64K w
mremap a 0 32K 32K maymove fixed b 16K
dump a
dump b
