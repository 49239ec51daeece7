# MADV_PAGEOUT of a shared mapping unmaps its pages but they stay in the shared object: a read maps them again, up to 16 per fault.
mmap s 128K shared
touch s 0 128K w
madvise s 0 128K pageout
dump s
touch s 0 128K r
dump s
