# MADV_COLLAPSE of a populated PROT_NONE range collapses it and keeps it PROT_NONE; an empty one gives EINVAL.
mmap a 4M
touch a 0 1M w
madvise a 0 4M hugepage
mprotect a 0 4M none
madvise a 0 2M collapse
madvise a 2M 2M collapse
dump a
touch a 0 4K r
mprotect a 0 4M rw
touch a 0 4K r
