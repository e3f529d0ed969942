//! Bytes held, as a counting global allocator (`stats_alloc`) sees them: for the
//! memory test here and the allocator-counted memory bench, each of which installs
//! `stats_alloc::INSTRUMENTED_SYSTEM` in its own binary.

use std::alloc::System;

use stats_alloc::Region;

/// Bytes held now that were not when `region` began: allocated minus freed.
/// stats_alloc counts a reallocation's growth in `bytes_allocated` and again in
/// `bytes_reallocated`, so adding the latter would count every growth twice.
pub fn held(region: &Region<'_, System>) -> isize {
    let s = region.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}
