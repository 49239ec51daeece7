# munmap of part of a THP splits its PMD; munmap of a whole aligned THP removes the PMD.
# The unmapped pages are gone and the rest of the split folio stays mapped by PTEs.
mmap h 6M huge
touch h 0 6M w
munmap h 64K 64K
munmap h 2M 2M
dump h
