# A read fault in a shared mapping also maps the object's cached pages in its 64 KiB window.
# The fault-around window is the aligned 16 pages around the fault (it never crosses a page
# table); pages the object does not hold are left unmapped. A write fault maps only its page.
mmap s 256K shared
touch s 0 256K w
madvise s 0 256K dontneed
dump s
touch s 20K 4K r
dump s
touch s 100K 4K w
dump s
