# In a writable shared mapping a read fault maps the page writable: a later write takes no fault.
mmap s 16K shared
touch s 0 16K r
dump s
touch s 0 16K w
