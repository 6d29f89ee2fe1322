//! Regression tests: readers (see tests/regression.rs).
#![allow(unused_imports)]

use crate::common::*;
