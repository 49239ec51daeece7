# MADV_COLLAPSE copies a range with holes and zero-page entries into a new THP (all new frames); ranges already PMD-mapped are fine.
mmap a 6M huge
madvise a 0 6M nohugepage
touch a 0 64K w
touch a 64K 64K r
touch a 1M 4K w
madvise a 0 6M hugepage
touch a 2M 4K w
madvise a 0 4M collapse
dump a
