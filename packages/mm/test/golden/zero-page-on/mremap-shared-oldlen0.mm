# mremap with old length 0 on a shared mapping maps its pages a second time.
mmap s 64K shared
touch s 0 64K w
mremap s 0 0 64K maymove
dump s
touch s 0 64K r
dump s
