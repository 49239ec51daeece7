# madvise over a hole applies the advice to every mapped part of the range, then fails with ENOMEM.
mmap a 32K
touch a 0 32K w
munmap a 12K 4K
madvise a 0 32K dontneed
dump a
