# MADV_FREE of a whole PMD-mapped THP keeps the PMD; MADV_PAGEOUT discards it and leaves a PTE table, so refaults map 4 KiB pages.
mmap a 4M huge
touch a 0 2M w
madvise a 0 2M free
dump a
madvise a 0 2M pageout
dump a
touch a 0 16K w
dump a
