# MADV_COLLAPSE fails with EINVAL where a 2 MiB range has no page table, after collapsing the other ranges.
mmap a 6M
touch a 0 4K w
touch a 4M 4K w
madvise a 0 6M hugepage
madvise a 0 6M collapse
dump a
