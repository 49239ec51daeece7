# After MREMAP_DONTUNMAP the old range is still mapped and empty: reads map the zero page, writes new frames.
mmap a 4M
touch a 0 64K w
mremap a 0 64K 64K maymove fixed a 1M dontunmap
dump a
touch a 0 16K r
touch a 16K 16K w
dump a
