# MADV_FREE of a shared mapping fails with EINVAL and changes nothing.
mmap s 64K shared
touch s 0 64K w
madvise s 0 64K free
dump s
