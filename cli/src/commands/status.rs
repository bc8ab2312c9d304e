//! `udmabuf-ctl status`: open the device and report the module.

use crate::cli::StatusArgs;
use crate::device;
use anyhow::Result;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct Status {
    device: device::DeviceInfo,
    module: device::ModuleInfo,
}

pub fn run(args: &StatusArgs) -> Result<ExitCode> {
    let file = device::open(&args.device)?;
    let status = Status { device: device::device_info(&args.device, &file)?, module: device::module_info() };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
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
