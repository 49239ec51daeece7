# MADV_FREE and MADV_PAGEOUT over a hole free the mapped parts and then fail with ENOMEM.
mmap a 64K
touch a 0 64K w
munmap a 16K 16K
madvise a 0 64K free
madvise a 0 64K pageout
dump a
