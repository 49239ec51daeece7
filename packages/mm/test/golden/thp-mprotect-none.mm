# mprotect PROT_NONE of a whole THP keeps it mapped by its PMD, but refuses every access.
# pagemap still shows the pages and smaps still counts the huge mapping. Back to rw, the PMD is
# writable again at once: no fault.
mmap h 2M huge
touch h 0 2M w
mprotect h 0 2M none
dump h
touch h 4K 4K r
mprotect h 0 2M rw
touch h 0 2M w
dump h
