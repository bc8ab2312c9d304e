//! `udmabuf-ctl status`: open the device and report the module.

use crate::cli::StatusArgs;
use crate::{device, output};
use anyhow::Result;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct Status {
    device: device::DeviceInfo,
    module: device::ModuleInfo,
}

pub fn run(args: &StatusArgs) -> Result<ExitCode> {
    let path = &args.device.device;
    let file = device::open(path)?;
    let status = Status { device: device::device_info(path, &file)?, module: device::module_info() };
    if args.json {
        output::json(&status)?;
    } else {
        let d = &status.device;
        let m = &status.module;
        println!("device  {} (char {}:{})", d.path, d.major, d.minor);
        println!("module  {} loaded, refcnt {}", m.name, m.refcnt.map_or("?".into(), |r| r.to_string()));
        for (k, v) in &m.parameters {
            println!("param   {k} = {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
