# MADV_COLLAPSE fails with EINVAL in a MADV_NOHUGEPAGE mapping, and for an unaligned range or one split across VMAs in a hugepage one.
mmap a 4M
touch a 0 2M w
madvise a 0 2M collapse
madvise a 0 2M hugepage
madvise a 4K 2M collapse
mprotect a 1M 4K r
madvise a 0 2M collapse
dump a
