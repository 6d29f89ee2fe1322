//! Regression tests: users (see tests/regression.rs).
#![allow(unused_imports)]

use crate::common::*;
