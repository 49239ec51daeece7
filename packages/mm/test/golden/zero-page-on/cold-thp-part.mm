# MADV_COLD changes nothing the page table shows, except that a THP only partly in the range is split like MADV_PAGEOUT splits it.
mmap a 64K
touch a 0 64K w
madvise a 0 64K cold
dump a
mmap h 4M huge
touch h 0 1M w
madvise h 0 2M cold
dump h
madvise h 0 1M cold
dump h
