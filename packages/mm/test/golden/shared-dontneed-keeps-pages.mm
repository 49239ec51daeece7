# MADV_DONTNEED of a shared mapping unmaps its pages, but the shared object keeps them.
# The next fault maps the same frames again (a read fault brings back its neighbours too).
mmap s 32K shared
touch s 0 32K w
dump s
madvise s 0 32K dontneed
dump s
touch s 8K 4K r
dump s
