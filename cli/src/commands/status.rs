//! `udmabuf-ctl status`: open the device and report the driver behind it (the one the
//! node belongs to: udmabuf-live's module, or the kernel's udmabuf).

use crate::cli::StatusArgs;
use crate::{device, output};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

#[derive(Serialize)]
struct Status {
    device: device::DeviceInfo,
    module: device::ModuleInfo,
}

pub fn render_human(d: &device::DeviceInfo, m: &device::ModuleInfo) -> String {
    let mut s = format!(
        "device  {} (char {}:{}{})\n",
        d.path,
        d.major,
        d.minor,
        d.devname.as_ref().map_or(String::new(), |n| format!(", misc device {n}"))
    );
    let state = if !m.loaded {
        "not in /sys/module (built in, without parameters)".to_owned()
    } else if m.built_in {
        "built in".to_owned()
    } else {
        format!("loaded, refcnt {}", m.refcnt.map_or("?".into(), |r| r.to_string()))
    };
    s += &format!("driver  {} {state}\n", m.name);
    for (k, v) in &m.parameters {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        s += &format!("param   {k} = {v}\n");
    }
    s
}

pub fn run(args: &StatusArgs) -> Result<ExitCode> {
    let path = &args.device.device;
    let file = device::open(path)?;
    let dev = device::device_info(path, &file)?;
    let module = match &dev.devname {
        Some(n) => device::module_of_devname(n),
        None => device::module_of_node(Path::new(device::SYSFS), path),
    };
    let status = Status { module: device::module_info(Path::new(device::SYSFS), &module), device: dev };
    if args.json {
        output::json(&status)?;
    } else {
        print!("{}", render_human(&status.device, &status.module));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_driver_of_the_node() {
        let root = crate::device::tests::fake_sysfs("status");
        let d = crate::device::DeviceInfo { path: "/dev/udmabuf".into(), major: 10, minor: 125, devname: Some("udmabuf".into()) };
        let text = super::render_human(&d, &crate::device::module_info(&root, "udmabuf"));
        assert!(text.contains("driver  udmabuf built in"), "{text}");
        assert!(!text.contains("udmabuf_live"), "{text}");
        assert!(text.contains("param   size_limit_mb = 64"), "{text}");
    }
}
