# MREMAP_DONTUNMAP moves the pages and leaves the old range mapped and empty: it refaults as the zero page and new frames.
mmap a 64K
mmap b 64K none
touch a 0 64K w
mremap a 0 64K 64K maymove fixed b 0 dontunmap
dump a
dump b
mmap c 64K
touch c 0 64K w
mremap c 0 64K 64K maymove dontunmap
dump c
