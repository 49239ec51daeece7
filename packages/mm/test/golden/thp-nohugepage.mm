# Without MADV_HUGEPAGE, in THP mode madvise, an aligned 2 MiB range gets 4 KiB pages.
mmap a 2M
touch a 0 16K w
dump a
