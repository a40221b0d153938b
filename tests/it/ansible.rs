//! Ansible inventories, INI and YAML, read directly (`-i hosts.ini`) against real sshd hosts, and
//! `capstan inventory convert` giving the same hosts and vars as TOML.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{capstan_in, last_report, outcome_error, repo, Lab, Out};

fn hello_dirs(dir: &Path) {
    let out = Command::new("sh")
        .arg(repo().join("examples/hello/lab.sh"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn run_hello(dir: &Path, inv: &Path, apps: &Path) -> (Out, Value) {
    let pb = repo().join("examples/hello/playbook.rhai");
    let release = format!("release={}", apps.join("release").display());
    let out = capstan_in(
        dir,
        &[
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "-p",
            &release,
            "--json",
        ],
    );
    let report = last_report(&out.stdout);
    (out, report)
}

#[test]
fn ansible_ini_and_yaml_inventories_run_the_readme_example_and_convert_to_the_same_toml() {
    let lab = Lab::start(3);
    let dir = tempfile::tempdir().unwrap();
    let (ini_apps, yaml_apps) = (dir.path().join("ini"), dir.path().join("yaml"));
    hello_dirs(&ini_apps);
    hello_dirs(&yaml_apps);
    let (key, kh) = (lab.path("id_ed25519"), lab.path("known_hosts"));
    let p = &lab.ports;

    let ini = format!(
        r#"# The hello example's three hosts, as an Ansible user keeps them.
[app]
app1 ansible_port={p0} root={apps}/app1
app2 ansible_port={p1} root={apps}/app2
app3 ansible_port={p2} root={apps}/app3

[app:vars]
ansible_host=127.0.0.1
ansible_user=root
ansible_ssh_private_key_file={key}
ansible_ssh_common_args='-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes'
ansible_python_interpreter=/usr/bin/python3

[dc1:children]
app

[dc1:vars]
site=hz
tier=dc
"#,
        p0 = p[0],
        p1 = p[1],
        p2 = p[2],
        apps = ini_apps.display(),
        key = key.display(),
        kh = kh.display(),
    );
    let ini_path = dir.path().join("hosts.ini");
    std::fs::write(&ini_path, &ini).unwrap();
    let (out, report) = run_hello(dir.path(), &ini_path, &ini_apps);
    assert_eq!(
        report["outcome"]["status"],
        "succeeded",
        "{}\n{}",
        outcome_error(&report),
        out.stderr
    );
    assert!(
        out.stderr
            .contains("not used by capstan: ansible_python_interpreter (app1, app2, app3)"),
        "the unmapped setting is named: {}",
        out.stderr
    );
    for a in ["app1", "app2", "app3"] {
        let v = std::fs::read_to_string(ini_apps.join(a).join("VERSION")).unwrap();
        assert_eq!(v, "1.1.0\n", "{a}");
    }

    let yaml = format!(
        r#"all:
  children:
    dc1:
      vars: {{ site: hz, tier: dc }}
      children:
        app:
          vars:
            ansible_host: 127.0.0.1
            ansible_user: root
            ansible_ssh_private_key_file: {key}
            ansible_ssh_common_args: "-o UserKnownHostsFile={kh}"
          hosts:
            app[1:3]:
    ports:
      hosts:
        app1: {{ ansible_port: {p0}, root: {apps}/app1 }}
        app2: {{ ansible_port: {p1}, root: {apps}/app2 }}
        app3: {{ ansible_port: {p2}, root: {apps}/app3 }}
"#,
        p0 = p[0],
        p1 = p[1],
        p2 = p[2],
        apps = yaml_apps.display(),
        key = key.display(),
        kh = kh.display(),
    );
    let yaml_path = dir.path().join("hosts.yml");
    std::fs::write(&yaml_path, &yaml).unwrap();
    let (out, report) = run_hello(dir.path(), &yaml_path, &yaml_apps);
    assert_eq!(
        report["outcome"]["status"],
        "succeeded",
        "{}\n{}",
        outcome_error(&report),
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(yaml_apps.join("app2/VERSION")).unwrap(),
        "1.1.0\n"
    );

    // convert: the TOML is the same inventory (hosts, settings, vars, groups).
    let toml_path = dir.path().join("converted.toml");
    let out = capstan_in(
        dir.path(),
        &[
            "inventory",
            "convert",
            "-i",
            ini_path.to_str().unwrap(),
            "--out",
            toml_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("not mapped: ansible_python_interpreter"),
        "{}",
        out.stderr
    );
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    assert!(
        toml.contains("#   ansible_python_interpreter (app1, app2, app3)"),
        "{toml}"
    );
    let show = |inv: &Path| -> Value {
        let out = capstan_in(
            dir.path(),
            &[
                "-F",
                "none",
                "inventory",
                "show",
                "--json",
                "-i",
                inv.to_str().unwrap(),
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        let mut v: Value = serde_json::from_str(&out.stdout).unwrap();
        // Origins name the file each value came from, which differs by design.
        for h in v["hosts"].as_array_mut().unwrap() {
            h.as_object_mut().unwrap().remove("origins");
        }
        v["hosts"].clone()
    };
    assert_eq!(show(&ini_path), show(&toml_path));
    let hosts = show(&toml_path);
    assert_eq!(hosts[1]["port"], p[1]);
    assert_eq!(hosts[1]["known_hosts"], kh.to_str().unwrap());
    assert_eq!(hosts[1]["groups"], serde_json::json!(["app", "dc1"]));
    // The YAML one converts to the same hosts too (its apps directory aside).
    let yaml_toml = capstan_in(
        dir.path(),
        &["inventory", "convert", "-i", yaml_path.to_str().unwrap()],
    );
    assert_eq!(yaml_toml.code, 0, "{}", yaml_toml.stderr);
    let yaml_conv = dir.path().join("from-yaml.toml");
    std::fs::write(
        &yaml_conv,
        yaml_toml
            .stdout
            .replace(yaml_apps.to_str().unwrap(), ini_apps.to_str().unwrap()),
    )
    .unwrap();
    let mut from_yaml = show(&yaml_conv);
    let mut from_ini = show(&ini_path);
    // The INI file asked for strict host keys explicitly (strict is also the default), and the
    // YAML one keeps the ports in a group of their own.
    for h in from_yaml
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .chain(from_ini.as_array_mut().unwrap())
    {
        let h = h.as_object_mut().unwrap();
        h.remove("host_key_policy");
        h.remove("groups");
    }
    assert_eq!(from_yaml, from_ini);

    // A file that is not an Ansible inventory by its name is refused, naming it.
    let out = capstan_in(dir.path(), &["inventory", "convert", "-i", "inv.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("inv.toml: not an Ansible inventory"),
        "{}",
        out.stderr
    );
    // A broken one names the file and line.
    std::fs::write(dir.path().join("bad.ini"), "[app]\napp1 port\n").unwrap();
    let out = capstan_in(dir.path(), &["inventory", "show", "-i", "bad.ini"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("bad.ini:2: `port`: expected key=value"),
        "{}",
        out.stderr
    );
}
