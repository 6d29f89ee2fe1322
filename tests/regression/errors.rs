//! Regression tests: errors (see tests/regression.rs).
#![allow(unused_imports)]

use crate::common::*;
