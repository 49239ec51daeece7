# MADV_COLLAPSE of a shared mapping puts its pages in a new 2 MiB page of the shared object and maps it with a PMD.
mmap s 4M shared huge
touch s 0 1M w
madvise s 0 2M collapse
dump s
