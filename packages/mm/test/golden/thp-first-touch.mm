# In a MADV_HUGEPAGE region the first fault in an aligned 2 MiB range maps a whole THP.
# One fault, one PMD, for a write as for a read (without the zero page there is no huge zero page
# either). Further touches of the THPs take no fault.
mmap h 4M huge
touch h 0 4K w
touch h 2M 4K r
dump h
touch h 0 4M w
