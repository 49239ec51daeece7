# MREMAP_DONTUNMAP with a same-size MREMAP_FIXED move takes every VMA of the range along, leaving each old one mapped and empty.
mmap a 2M
touch a 0 64K w
mprotect a 16K 16K r
mremap a 0 64K 64K maymove fixed a 1M dontunmap
dump a
touch a 0 64K r
dump a
