//! `tacit group ...`: groups over MLS (issue 11).

use std::path::Path;

use serde_json::json;
use tacit_client::{ConnectOptions, GroupInfo};

use crate::args::GroupCommand;
use crate::output::{Out, rfc3339, terminal_safe};
use crate::{CliError, open};

fn group_line(out: &Out, g: &GroupInfo) {
    if out.is_json() {
        let members: Vec<_> = g.members.iter().map(|(a, d)| json!({"account": a, "device": d})).collect();
        out.raw(json!({"type": "group", "id": g.id, "name": g.name, "epoch": g.epoch, "members": members}));
    } else {
        let mut accounts: Vec<&str> = g.members.iter().map(|(a, _)| a.as_str()).collect();
        accounts.dedup();
        println!(
            "{} ({} device{}: {}) id {}",
            terminal_safe(&g.name),
            g.members.len(),
            if g.members.len() == 1 { "" } else { "s" },
            accounts.join(", "),
            g.id
        );
    }
}

pub async fn run(
    cmd: GroupCommand,
    home: &Path,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    let mut c = open(home, options, json)?;
    let r = match cmd {
        GroupCommand::Create { name, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            c.create_group(&name, &members).await.map(|g| group_line(out, &g))
        }
        GroupCommand::Add { name, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            c.group_add(&name, &members).await.map(|g| group_line(out, &g))
        }
        GroupCommand::Remove { name, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            c.group_remove(&name, &members).await.map(|g| group_line(out, &g))
        }
        GroupCommand::Rename { name, new_name } => {
            c.group_rename(&name, &new_name).await.map(|g| group_line(out, &g))
        }
        GroupCommand::Update { name } => c.group_update(&name).await.map(|g| group_line(out, &g)),
        GroupCommand::Leave { name } => c.group_leave(&name).await.map(|()| {
            if out.is_json() {
                out.raw(json!({"type": "left", "group": name}));
            } else {
                println!("left {}", terminal_safe(&name));
            }
        }),
        GroupCommand::List => c.groups().map(|gs| {
            for g in &gs {
                group_line(out, g);
            }
        }),
        GroupCommand::Members { name } => c.group(&name).map(|g| {
            for (account, device) in &g.members {
                if out.is_json() {
                    out.raw(json!({"type": "member", "group": g.name, "account": account, "device": device}));
                } else {
                    println!("{account} device {device}");
                }
            }
        }),
        GroupCommand::Send { name, text } => c.group_send(&name, &text).await.map(|m| {
            if out.is_json() {
                out.raw(json!({"type": "sent", "group": name, "devices": m.devices,
                    "server_time": rfc3339(m.server_time_ms), "sent_time": rfc3339(m.sent_time_ms)}));
            } else {
                println!("sent to {}", terminal_safe(&name));
            }
        }),
    };
    out.warnings(c.take_warnings());
    Ok(r?)
}
