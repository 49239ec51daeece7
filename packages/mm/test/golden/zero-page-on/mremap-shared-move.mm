# A shared mapping moved with MREMAP_FIXED keeps its pages, which stay in the shared object: after MADV_PAGEOUT a read at the new address maps them again.
mmap s 64K shared
mmap t 64K none
touch s 0 64K w
mremap s 0 64K 64K maymove fixed t 0
dump s
madvise s 0 64K pageout
touch s 0 64K r
dump s
