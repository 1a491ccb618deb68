// Extracts from a rendered chart what a kubelet would run for the agent pod,
// into files a shell can use without parsing YAML (tests/chart/pod_emulation_test.sh):
//   argv           command + args, NUL-separated
//   env            NAME=value lines (fieldRef spec.nodeName -> $XVIO_TEST_NODE_NAME)
//   probe.<kind>   each exec probe's command, NUL-separated
//   probe-budget   startup probe seconds (period * failureThreshold)
//   grace          terminationGracePeriodSeconds
//   mounts         "<mountPath>\t<kind>\t<source>" lines; kind: hostPath|configMap|secret|emptyDir
//   volumes/<name>/<key>  files of each configMap volume
// Usage: node pod_spec.js RENDERED.yaml OUT_DIR
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const [renderedFile, outDir] = process.argv.slice(2);
const docs = YAML.parseAllDocuments(fs.readFileSync(renderedFile, "utf8"))
  .map((d) => d.toJSON()).filter(Boolean);
const daemonSet = docs.find((d) => d.kind === "DaemonSet");
if (!daemonSet) throw new Error("no DaemonSet rendered");
const pod = daemonSet.spec.template.spec;
const agent = pod.containers.find((c) => c.name === "agent");
const configMaps = Object.fromEntries(
  docs.filter((d) => d.kind === "ConfigMap").map((d) => [d.metadata.name, d]));

fs.mkdirSync(outDir, { recursive: true });
const write = (name, text) => fs.writeFileSync(path.join(outDir, name), text);
const nulJoin = (list) => list.map(String).join("\0") + "\0";

write("argv", nulJoin([...(agent.command || []), ...(agent.args || [])]));
write("env", (agent.env || []).map((e) => {
  if (e.value !== undefined) return `${e.name}=${e.value}\n`;
  if (e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath === "spec.nodeName") {
    return `${e.name}=${process.env.XVIO_TEST_NODE_NAME || "test-node"}\n`;
  }
  throw new Error(`env ${e.name}: unsupported source`);
}).join(""));
for (const kind of ["startupProbe", "livenessProbe", "readinessProbe"]) {
  write(`probe.${kind}`, nulJoin(agent[kind].exec.command));
}
write("probe-budget", String(agent.startupProbe.periodSeconds * agent.startupProbe.failureThreshold));
write("grace", String(pod.terminationGracePeriodSeconds || 30));

const volumes = Object.fromEntries(pod.volumes.map((v) => [v.name, v]));
const lines = [];
for (const mount of agent.volumeMounts) {
  const volume = volumes[mount.name];
  if (!volume) throw new Error(`volumeMount ${mount.name} has no volume`);
  if (volume.hostPath) {
    lines.push(`${mount.mountPath}\thostPath\t${volume.hostPath.path}`);
  } else if (volume.configMap) {
    const configMap = configMaps[volume.configMap.name];
    if (!configMap) throw new Error(`configMap ${volume.configMap.name} is not rendered`);
    const dir = path.join(outDir, "volumes", mount.name);
    fs.mkdirSync(dir, { recursive: true });
    for (const [key, text] of Object.entries(configMap.data)) fs.writeFileSync(path.join(dir, key), text);
    lines.push(`${mount.mountPath}\tconfigMap\t${dir}`);
  } else if (volume.secret) {
    lines.push(`${mount.mountPath}\tsecret\t${volume.secret.secretName}`);
  } else if (volume.emptyDir) {
    lines.push(`${mount.mountPath}\temptyDir\t-`);
  } else {
    throw new Error(`volume ${mount.name}: unsupported kind`);
  }
}
write("mounts", lines.join("\n") + "\n");
