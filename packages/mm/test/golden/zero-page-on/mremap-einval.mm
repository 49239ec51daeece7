# mremap's EINVAL cases: unaligned old or new address, new length 0, MREMAP_FIXED or MREMAP_DONTUNMAP without MREMAP_MAYMOVE, MREMAP_DONTUNMAP resizing, a destination overlapping the source, old length 0 on a private mapping.
mmap a 64K
mmap b 64K
touch a 0 64K w
mremap a 1K 8K 8K
mremap a 0 8K 0
mremap a 0 8K 8K fixed b 0
mremap a 0 8K 8K dontunmap
mremap a 0 8K 16K maymove dontunmap
mremap a 0 8K 8K maymove fixed b 1K
mremap a 0 16K 16K maymove fixed a 8K
mremap a 0 0 8K maymove
dump a
