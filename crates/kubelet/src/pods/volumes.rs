//! Pod volumes on the node: emptyDir (on disk, or tmpfs for medium Memory with sizeLimit),
//! configMap, secret, downwardAPI and projected (written atomically so updates reach running
//! pods, as upstream's AtomicWriter does), hostPath, and persistentVolumeClaim bound to a local
//! or hostPath PersistentVolume. Then the CRI mounts of a container (subPath, readOnly).
//!
//! Everything of a pod lives under `PODS_DIR/UID/volumes/NAME`; [`teardown`] unmounts and
//! removes it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::container::{EnvContext, field_value, resource_value, secret_strings};
use crate::runtime::cri;

/// A volume that could not be set up (the pod gets a FailedMount event).
#[derive(Debug)]
pub struct MountError(pub String);

/// The directory of a pod's volumes.
pub fn pod_dir(pods_dir: &Path, uid: &str) -> PathBuf {
    pods_dir.join(uid)
}

/// Sets up every volume of the pod (idempotent; refreshes configMap/secret/downwardAPI/projected
/// contents) and returns each volume's host path.
pub async fn prepare(
    pods_dir: &Path,
    pod: &Pod,
    env: &EnvContext<'_>,
) -> Result<HashMap<String, PathBuf>, MountError> {
    let uid = pod.uid().unwrap_or_default();
    let root = pod_dir(pods_dir, &uid).join("volumes");
    let ns = pod.namespace().unwrap_or_default();
    let mut paths = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = root.join(&v.name);
        let path = prepare_one(env.client, &ns, pod, v, &dir, env)
            .await
            .map_err(|e| {
                MountError(format!(
                    "MountVolume.SetUp failed for volume \"{}\" : {}",
                    v.name, e.0
                ))
            })?;
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &Client,
    ns: &str,
    pod: &Pod,
    v: &Volume,
    dir: &Path,
    env: &EnvContext<'_>,
) -> Result<PathBuf, MountError> {
    let io = |e: std::io::Error| MountError(e.to_string());
    if let Some(e) = &v.empty_dir {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
        if e.medium.as_deref() == Some("Memory") && !is_mount_point(dir) {
            let size = e
                .size_limit
                .as_ref()
                .and_then(|q| api::resources::validation::parse_quantity(&q.0))
                .map(|b| format!(",size={}", b as u64))
                .unwrap_or_default();
            rustix::mount::mount(
                "tmpfs",
                dir,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                Some(&*std::ffi::CString::new(format!("mode=0777{size}")).unwrap_or_default()),
            )
            .map_err(|e| MountError(format!("mounting tmpfs: {e}")))?;
        }
        return Ok(dir.to_path_buf());
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io)?,
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(&path, b"").map_err(io)?;
            }
            "Directory" if !path.is_dir() => {
                return Err(MountError(format!(
                    "hostPath type check failed: {} is not a directory",
                    h.path
                )));
            }
            "File" if !path.is_file() => {
                return Err(MountError(format!(
                    "hostPath type check failed: {} is not a file",
                    h.path
                )));
            }
            "Socket" | "CharDevice" | "BlockDevice" if !path.exists() => {
                return Err(MountError(format!(
                    "hostPath type check failed: {} does not exist",
                    h.path
                )));
            }
            _ => {}
        }
        return Ok(path);
    }
    if let Some(pvc) = &v.persistent_volume_claim {
        return claim_path(client, ns, &pvc.claim_name).await;
    }
    // The projected kinds: compute the files, then write them atomically.
    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    let source = |optional: Option<bool>, items: Option<&[KeyToPath]>, mode: u32| Source {
        optional: optional.unwrap_or(false),
        items: items.map(<[KeyToPath]>::to_vec),
        mode,
    };
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        let src = source(cm.optional, cm.items.as_deref(), mode);
        add_config_map(&mut files, client, ns, &cm.name, &src).await?;
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let src = source(s.optional, s.items.as_deref(), mode);
        add_secret(&mut files, client, ns, &name, &src).await?;
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        add_downward(&mut files, pod, d.items.as_deref(), mode, env)?;
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let s = source(cm.optional, cm.items.as_deref(), mode);
                add_config_map(&mut files, client, ns, &cm.name, &s).await?;
            }
            if let Some(sec) = &src.secret {
                let s = source(sec.optional, sec.items.as_deref(), mode);
                add_secret(&mut files, client, ns, &sec.name, &s).await?;
            }
            if let Some(d) = &src.downward_api {
                add_downward(&mut files, pod, d.items.as_deref(), mode, env)?;
            }
        }
    } else {
        return Err(MountError("unsupported volume type".into()));
    }
    write_atomically(dir, &files).map_err(io)?;
    Ok(dir.to_path_buf())
}

/// How a configMap or secret source becomes files: which keys, their mode, whether a missing
/// object is fine.
struct Source {
    optional: bool,
    items: Option<Vec<KeyToPath>>,
    mode: u32,
}

async fn add_config_map(
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
    client: &Client,
    ns: &str,
    name: &str,
    src: &Source,
) -> Result<(), MountError> {
    match get::<ConfigMap>(client, ns, name).await? {
        Some(obj) => add_keys(
            files,
            config_map_data(&obj),
            src.items.as_deref(),
            src.mode,
            name,
        ),
        None if src.optional => Ok(()),
        None => Err(MountError(format!("configmap \"{name}\" not found"))),
    }
}

async fn add_secret(
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
    client: &Client,
    ns: &str,
    name: &str,
    src: &Source,
) -> Result<(), MountError> {
    match get::<Secret>(client, ns, name).await? {
        Some(obj) => add_keys(
            files,
            secret_data(&obj),
            src.items.as_deref(),
            src.mode,
            name,
        ),
        None if src.optional => Ok(()),
        None => Err(MountError(format!("secret \"{name}\" not found"))),
    }
}

fn add_downward(
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
    pod: &Pod,
    items: Option<&[k8s_openapi::api::core::v1::DownwardAPIVolumeFile]>,
    mode: u32,
    env: &EnvContext<'_>,
) -> Result<(), MountError> {
    for item in items.into_iter().flatten() {
        let value = downward_value(
            pod,
            item.field_ref.as_ref(),
            item.resource_field_ref.as_ref(),
            env,
        )?;
        files.insert(
            item.path.clone(),
            (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)),
        );
    }
    Ok(())
}

fn downward_value(
    pod: &Pod,
    field: Option<&k8s_openapi::api::core::v1::ObjectFieldSelector>,
    resource: Option<&k8s_openapi::api::core::v1::ResourceFieldSelector>,
    env: &EnvContext<'_>,
) -> Result<String, MountError> {
    if let Some(f) = field {
        return field_value(pod, &f.field_path, env)
            .ok_or_else(|| MountError(format!("unsupported fieldRef {}", f.field_path)));
    }
    if let Some(r) = resource {
        let name = r.container_name.clone().unwrap_or_default();
        let c = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .ok_or_else(|| {
                MountError(format!("container {name} not found for resourceFieldRef"))
            })?;
        return resource_value(pod, c, r, env).map_err(|e| MountError(e.0));
    }
    Ok(String::new())
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret_strings(s) {
        out.entry(k).or_insert_with(|| v.into_bytes());
    }
    out
}

fn add_keys(
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    source: &str,
) -> Result<(), MountError> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    return Err(MountError(format!(
                        "configuration key \"{}\" not found in {source}",
                        item.key
                    )));
                };
                files.insert(
                    item.path.clone(),
                    (value.clone(), item.mode.map_or(mode, |m| m as u32)),
                );
            }
        }
        _ => {
            for (k, v) in data {
                files.insert(k, (v, mode));
            }
        }
    }
    Ok(())
}

/// Writes `files` under `dir` the way upstream's AtomicWriter does: a fresh `..TIMESTAMP`
/// directory, the `..data` symlink swapped to it in one rename, and one symlink per top-level
/// name pointing into `..data`. Nothing is rewritten when the contents did not change.
pub fn write_atomically(
    dir: &Path,
    files: &BTreeMap<String, (Vec<u8>, u32)>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    if data_link.exists() && same_contents(&data_link, files) {
        return Ok(());
    }
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh)?;
    for (path, (bytes, mode)) in files {
        let rel = safe_relative(path)?;
        let file = fresh.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode & 0o777))?;
    }
    let old = std::fs::read_link(&data_link).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;
    // Top-level names: add the new, drop the gone.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn same_contents(data: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> bool {
    let mut count = 0;
    for (path, (bytes, mode)) in files {
        let f = data.join(path);
        match (std::fs::read(&f), std::fs::metadata(&f)) {
            (Ok(b), Ok(m)) if &b == bytes && m.permissions().mode() & 0o777 == *mode & 0o777 => {}
            _ => return false,
        }
        count += 1;
    }
    count_files(data) == count
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn safe_relative(path: &str) -> std::io::Result<&Path> {
    let p = Path::new(path);
    if p.is_absolute()
        || path.is_empty()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        || path.starts_with("..")
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid path {path:?}"),
        ));
    }
    Ok(p)
}

async fn claim_path(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, MountError> {
    let pvc = get::<PersistentVolumeClaim>(client, ns, claim)
        .await?
        .ok_or_else(|| MountError(format!("persistentvolumeclaim \"{claim}\" not found")))?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| MountError(format!("persistentvolumeclaim \"{claim}\" is not bound")))?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .map_err(|e| MountError(e.to_string()))?
        .ok_or_else(|| MountError(format!("persistentvolume \"{volume}\" not found")))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            MountError(format!(
                "persistentvolume \"{volume}\" is neither hostPath nor local"
            ))
        })?;
    std::fs::create_dir_all(&path).map_err(|e| MountError(e.to_string()))?;
    Ok(PathBuf::from(path))
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>, MountError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| MountError(e.to_string()))
}

/// The CRI mounts of container `c`, from its volumeMounts and the prepared volume paths.
pub fn container_mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    pod: &Pod,
) -> Result<Vec<cri::Mount>, MountError> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(base) = volumes.get(&m.name) else {
            return Err(MountError(format!("volume \"{}\" not found", m.name)));
        };
        let mut host = base.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            let rel = safe_relative(sub).map_err(|e| MountError(e.to_string()))?;
            host = base.join(rel);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| MountError(e.to_string()))?;
            }
        }
        let volume_read_only = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| v.name == m.name)
            .is_some_and(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .and_then(|p| p.read_only)
                    .unwrap_or(false)
            });
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || volume_read_only,
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer as i32,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
                _ => cri::MountPropagation::PropagationPrivate as i32,
            },
            ..Default::default()
        });
    }
    Ok(mounts)
}

fn is_mount_point(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*d))
}

/// Unmounts and removes everything the agent set up for pod `uid`.
pub fn teardown(pods_dir: &Path, uid: &str) {
    let dir = pod_dir(pods_dir, uid);
    if !dir.exists() {
        return;
    }
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&*prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Err(e) = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(mount = p, "unmounting: {e}");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), "removing pod volumes: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_swap_data_and_drop_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".to_string(), (b"2".to_vec(), 0o600));
        write_atomically(dir.path(), &files).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/b")).unwrap(),
            "2"
        );
        let mode = std::fs::metadata(dir.path().join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read_link(dir.path().join("..data")).unwrap();
        // Unchanged contents: nothing rewritten.
        write_atomically(dir.path(), &files).unwrap();
        assert_eq!(
            std::fs::read_link(dir.path().join("..data")).unwrap(),
            first
        );
        // A changed value and a removed key.
        files.insert("a".to_string(), (b"3".to_vec(), 0o644));
        files.remove("sub/b");
        write_atomically(dir.path(), &files).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "3");
        assert!(!dir.path().join("sub").exists());
        assert!(!dir.path().join(&first).exists());
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(safe_relative("../x").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
        assert!(safe_relative("a/../../b").is_err());
        assert!(safe_relative("a/b").is_ok());
    }
}
