// Validates Kubernetes manifests offline: each YAML document is checked
// against the Kubernetes (or prometheus-operator) schema of its kind, then the
// chart's own invariants are checked on the xvio DaemonSet when present.
// Usage: node validate_manifests.js [--chart-invariants] [--parse-only KIND...] FILE...
// Exit 0 when every document is valid; otherwise prints each error and exits 1.
"use strict";
const fs = require("fs");
const YAML = require("yaml");

const models = {
  "v1/ConfigMap": () => require("kubernetes-models/v1/ConfigMap").ConfigMap,
  "v1/Service": () => require("kubernetes-models/v1/Service").Service,
  "v1/ServiceAccount": () => require("kubernetes-models/v1/ServiceAccount").ServiceAccount,
  "v1/Pod": () => require("kubernetes-models/v1/Pod").Pod,
  "v1/Secret": () => require("kubernetes-models/v1/Secret").Secret,
  "apps/v1/DaemonSet": () => require("kubernetes-models/apps/v1/DaemonSet").DaemonSet,
  "monitoring.coreos.com/v1/ServiceMonitor": () =>
    require("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor")
      .ServiceMonitor,
};

const args = process.argv.slice(2);
let chartInvariants = false;
const parseOnlyKinds = new Set();
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--chart-invariants") chartInvariants = true;
  else if (args[i] === "--parse-only") parseOnlyKinds.add(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error("usage: node validate_manifests.js [--chart-invariants] [--parse-only KIND] FILE...");
  process.exit(2);
}

const errors = [];
const documents = [];
for (const file of files) {
  for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      errors.push(`${file}: YAML error: ${doc.errors[0].message}`);
      continue;
    }
    const object = doc.toJSON();
    if (object === null) continue;  // empty document
    documents.push({ file, object });
  }
}

for (const { file, object } of documents) {
  const key = `${object.apiVersion}/${object.kind}`;
  const where = `${file}: ${object.kind}/${object.metadata && object.metadata.name}`;
  if (parseOnlyKinds.has(object.kind)) continue;
  const model = models[key];
  if (!model) {
    errors.push(`${where}: no offline schema for ${key}`);
    continue;
  }
  try {
    new (model())(object).validate();
  } catch (error) {
    errors.push(`${where}: ${error.message}`);
  }
}

function check(condition, message) {
  if (!condition) errors.push(`chart invariant: ${message}`);
}

if (chartInvariants) {
  const daemonSets = documents.filter((d) => d.object.kind === "DaemonSet");
  check(daemonSets.length === 1, `expected one DaemonSet, found ${daemonSets.length}`);
  const configMaps = documents.filter((d) => d.object.kind === "ConfigMap");
  check(configMaps.length === 1, `expected one ConfigMap, found ${configMaps.length}`);
  if (daemonSets.length === 1 && configMaps.length === 1) {
    const pod = daemonSets[0].object.spec.template.spec;
    const agent = pod.containers.find((c) => c.name === "agent");
    check(pod.hostNetwork === true, "the agent pod must use hostNetwork");
    check(agent, "the DaemonSet must have a container named agent");
    if (agent) {
      for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
        const command = agent[probe] && agent[probe].exec && agent[probe].exec.command;
        check(Array.isArray(command) && command[0] === "xvioctl" && command.includes("health"),
              `${probe} must exec "xvioctl ... health"`);
      }
      const security = agent.securityContext || {};
      if (!security.privileged) {
        const caps = (security.capabilities && security.capabilities.add) || [];
        for (const needed of ["BPF", "NET_ADMIN", "NET_RAW"]) {
          check(caps.includes(needed), `unprivileged agent must add capability ${needed}`);
        }
        check((security.capabilities.drop || []).includes("ALL"), "unprivileged agent must drop ALL");
      }
      const mounts = Object.fromEntries((agent.volumeMounts || []).map((m) => [m.mountPath, m]));
      check(mounts["/sys/fs/bpf"] && mounts["/sys/fs/bpf"].mountPropagation,
            "bpffs must be mounted with mount propagation");
      check(mounts["/etc/xvio"], "the config must be mounted at /etc/xvio");
    }
    const config = YAML.parse(configMaps[0].object.data["agent.yaml"]);
    check(config && typeof config === "object" && !Array.isArray(config),
          "agent.yaml must be a YAML mapping");
    if (config && agent) {
      const mountPaths = (agent.volumeMounts || []).map((m) => m.mountPath);
      for (const key of ["socket-dir", "state-dir"]) {
        check(mountPaths.includes(config[key]), `${key} ${config[key]} must be a mounted hostPath`);
      }
      check(String(config["bpf-pin-dir"]).startsWith("/sys/fs/bpf/"),
            "bpf-pin-dir must be under the mounted bpffs");
    }
  }
}

if (errors.length) {
  for (const error of errors) console.error(error);
  console.error(`${errors.length} error(s) in ${documents.length} document(s)`);
  process.exit(1);
}
console.log(`${documents.length} document(s) valid`);
