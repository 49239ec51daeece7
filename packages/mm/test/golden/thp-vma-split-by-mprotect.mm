# Once mprotect has split the VMA inside an aligned 2 MiB range, faults there map 4 KiB pages.
# mprotect of one page in the first 2 MiB splits the VMA, so that 2 MiB no longer lies in one VMA.
# The second 2 MiB still gets a THP.
mmap h 4M huge
mprotect h 1M 4K r
touch h 0 8K w
touch h 2M 4K w
dump h
# Putting the protection back merges the VMAs, but the page table now exists, so the next fault
# in the first 2 MiB maps a 4 KiB page as well.
mprotect h 1M 4K rw
touch h 16K 4K w
dump h
