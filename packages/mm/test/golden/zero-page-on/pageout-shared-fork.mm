# MADV_PAGEOUT of a shared mapping skips the pages mapped by both parent and child.
mmap s 32K shared
touch s 0 32K w
fork
c touch s 0 16K r
madvise s 0 32K pageout
dump s
