//! The commands: wiring of the library crates and what they print.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use switchyard_engine::model::now_millis as now_ms;
use switchyard_rules::{load_dir, Loaded, Pack};

use crate::config::{self, LogFormat, ServeArgs};
use crate::{AgentCommand, TokenCommand};

pub(crate) mod admin;
pub(crate) mod demo;
pub(crate) mod diff;
pub(crate) mod pack;
pub(crate) mod serve;

use pack::*;
use serve::*;
