'use strict';
// eqsim's deployment rules: what a schema cannot see. Each check names the render, the object
// and the field. `check(renders, opts)` returns error strings; renders = [{name, objects}].
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'ReplicaSet']);
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding',
  'PersistentVolume', 'StorageClass', 'CustomResourceDefinition', 'PriorityClass']);
// The defaults of eqsim-server's flags that the manifests depend on (server/ main).
const SERVER_DEFAULTS = { port: '8500', metrics_port: '8502', drain_timeout_s: '30', batch_threads: '2' };
const BINARIES = ['eqsim-server', 'eqsim-train', 'eqsim-eval', 'eqsim'];

function id(obj) {
  const ns = obj.metadata && obj.metadata.namespace ? `${obj.metadata.namespace}/` : '';
  return `${obj.kind} ${ns}${obj.metadata ? obj.metadata.name : '?'}`;
}

function podSpecOf(obj) {
  if (WORKLOADS.has(obj.kind)) return obj.spec && obj.spec.template && obj.spec.template.spec;
  if (obj.kind === 'CronJob') {
    return obj.spec && obj.spec.jobTemplate && obj.spec.jobTemplate.spec.template.spec;
  }
  return null;
}

function podLabelsOf(obj) {
  const t = WORKLOADS.has(obj.kind) ? obj.spec && obj.spec.template : null;
  return (t && t.metadata && t.metadata.labels) || {};
}

function selectorMatches(selector, labels) {
  if (!selector) return false;
  const ml = selector.matchLabels || (selector.matchExpressions ? {} : selector);
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions || []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    if (e.operator === 'In' && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === 'NotIn' && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

function allContainers(spec) {
  return [...(spec.initContainers || []), ...(spec.containers || [])];
}

// The argv of a container as one list (command + args).
function argvOf(c) {
  return [...(c.command || []), ...(c.args || [])];
}

// Programs of ours that a container runs, with the flags passed to each: [{bin, flags:[name]}].
// Understands a direct command and `sh -c` scripts (line continuations joined).
function invocationsOf(c) {
  const argv = argvOf(c);
  if (argv.length === 0) return [];
  const out = [];
  const base = path.basename(argv[0]);
  const subcommand = (bin, words) => (bin === 'eqsim' ? words.find((w) => !w.startsWith('-')) : undefined);
  if (BINARIES.includes(base)) {
    out.push({ bin: base, sub: subcommand(base, argv.slice(1)),
      flags: argv.slice(1).filter((a) => a.startsWith('--')).map(flagName) });
  } else if (['sh', 'bash'].includes(base)) {
    const i = argv.indexOf('-c');
    const script = i >= 0 ? argv[i + 1] || '' : '';
    for (const line of script.replace(/\\\n/g, ' ').split('\n')) {
      const m = line.match(/^\s*(?:exec\s+)?(eqsim(?:-server|-train|-eval)?)\s(.*)$/);
      if (!m) continue;
      const flags = [...m[2].matchAll(/(?:^|\s)--([A-Za-z0-9_-]+)/g)].map((x) => x[1]);
      out.push({ bin: m[1], sub: subcommand(m[1], m[2].trim().split(/\s+/)), flags, script: true });
    }
  }
  return out;
}

function flagName(arg) {
  return arg.replace(/^--/, '').split('=')[0];
}

function parseFlagLines(text) {
  const flags = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    flags.push(line);
  }
  return flags;
}

// Resolves a file path inside a container to the ConfigMap key mounted there.
function configMapFile(render, spec, c, file) {
  for (const m of c.volumeMounts || []) {
    const mp = m.mountPath.replace(/\/$/, '');
    if (!(file === mp || file.startsWith(mp + '/'))) continue;
    const vol = (spec.volumes || []).find((v) => v.name === m.name);
    if (!vol || !vol.configMap) return { error: `${file} is on volume '${m.name}', not a ConfigMap` };
    const key = m.subPath || file.slice(mp.length + 1);
    const cm = render.objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === vol.configMap.name);
    if (!cm) return { error: `${file}: ConfigMap '${vol.configMap.name}' is not in the render` };
    if (!cm.data || !(key in cm.data)) return { error: `${file}: ConfigMap '${vol.configMap.name}' has no key '${key}'` };
    return { text: cm.data[key], from: `${vol.configMap.name}/${key}` };
  }
  return { error: `${file} is on no mounted volume (read-only root filesystem)` };
}

// The effective flags of an eqsim-server container: argv and --flagfile contents, left to
// right, later values winning (absl's order). Returns { flags: Map, list: [names], errors }.
function serverFlags(render, spec, c) {
  const errors = [];
  const flags = new Map();
  const list = [];
  const apply = (arg, from) => {
    const name = flagName(arg);
    const eq = arg.indexOf('=');
    const value = eq < 0 ? 'true' : arg.slice(eq + 1);
    list.push({ name, from });
    if (name === 'flagfile') {
      for (const file of value.split(',').filter(Boolean)) {
        const r = configMapFile(render, spec, c, file);
        if (r.error) errors.push(`--flagfile ${r.error}`);
        else for (const line of parseFlagLines(r.text)) {
          if (!line.startsWith('--')) errors.push(`flag file ${r.from}: line '${line}' is not --flag=value`);
          else apply(line, r.from);
        }
      }
      return;
    }
    flags.set(name, value);
  };
  for (const a of (c.args || [])) if (a.startsWith('--')) apply(a, 'args');
  return { flags, list, errors };
}

function envValue(render, c, name) {
  for (const e of c.env || []) if (e.name === name && e.value !== undefined) return e.value;
  for (const ef of c.envFrom || []) {
    if (!ef.configMapRef) continue;
    const cm = render.objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === ef.configMapRef.name);
    if (cm && cm.data && name in cm.data) return cm.data[name];
  }
  return undefined;
}

function preStopSleepSeconds(c) {
  const ps = c.lifecycle && c.lifecycle.preStop;
  if (!ps) return 0;
  if (ps.sleep && ps.sleep.seconds) return ps.sleep.seconds;
  const cmd = ps.exec && ps.exec.command;
  if (cmd && path.basename(cmd[0]) === 'sleep') return Number(cmd[1]) || 0;
  return 0;
}

function isUnder(p, mounts) {
  return mounts.find((m) => p === m.mountPath || p.startsWith(m.mountPath.replace(/\/$/, '') + '/'));
}

// ---- per-object checks ----

function checkPodSecurity(err, obj, spec) {
  const psc = spec.securityContext || {};
  if (spec.hostNetwork || spec.hostPID || spec.hostIPC) err(obj, 'spec: uses host namespaces');
  if (spec.automountServiceAccountToken !== false) {
    err(obj, 'pod spec: automountServiceAccountToken must be false (eqsim never calls the API)');
  }
  for (const v of spec.volumes || []) if (v.hostPath) err(obj, `volume '${v.name}': hostPath is not allowed`);
  for (const c of allContainers(spec)) {
    const sc = c.securityContext || {};
    const where = `container '${c.name}'`;
    const nonRoot = sc.runAsNonRoot !== undefined ? sc.runAsNonRoot : psc.runAsNonRoot;
    if (nonRoot !== true) err(obj, `${where}: runAsNonRoot must be true (pod or container securityContext)`);
    const uid = sc.runAsUser !== undefined ? sc.runAsUser : psc.runAsUser;
    if (uid === 0) err(obj, `${where}: runAsUser 0 (root)`);
    if (sc.allowPrivilegeEscalation !== false) err(obj, `${where}: securityContext.allowPrivilegeEscalation must be false`);
    if (sc.privileged) err(obj, `${where}: privileged`);
    if (sc.readOnlyRootFilesystem !== true) err(obj, `${where}: securityContext.readOnlyRootFilesystem must be true`);
    const drop = (sc.capabilities && sc.capabilities.drop) || [];
    if (!drop.includes('ALL')) err(obj, `${where}: securityContext.capabilities.drop must include ALL`);
    if (sc.capabilities && sc.capabilities.add && sc.capabilities.add.length) err(obj, `${where}: adds capabilities`);
    const sp = sc.seccompProfile || psc.seccompProfile;
    if (!sp || !['RuntimeDefault', 'Localhost'].includes(sp.type)) {
      err(obj, `${where}: seccompProfile must be RuntimeDefault or Localhost`);
    }
  }
}

let shellcheck;
const shellcheckCache = new Map();
function hasShellcheck() {
  if (shellcheck === undefined) {
    try {
      execFileSync('shellcheck', ['--version'], { stdio: 'ignore' });
      shellcheck = true;
    } catch (e) {
      shellcheck = false;
    }
  }
  return shellcheck;
}

// shellcheck on `sh -c` scripts of containers (Kubernetes $(VAR) references are expanded by the
// kubelet before the shell runs, so they are replaced by a placeholder first).
function checkScripts(err, obj, c) {
  const argv = argvOf(c);
  const i = argv.indexOf('-c');
  if (i < 0 || !['sh', 'bash'].includes(path.basename(argv[0])) || !hasShellcheck()) return;
  const dialect = path.basename(argv[0]);
  const script = `#!/bin/${dialect}\n` + String(argv[i + 1] || '').replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, 'K8S_$1');
  if (!shellcheckCache.has(script)) {
    let out = [];
    try {
      execFileSync('shellcheck', ['-s', dialect, '-f', 'gcc', '-'], { input: script, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (e) {
      out = String(e.stdout || '').split('\n').filter(Boolean);
    }
    shellcheckCache.set(script, out);
  }
  for (const line of shellcheckCache.get(script)) {
    err(obj, `container '${c.name}': script: shellcheck ${line.replace(/^-:/, 'line ')}`);
  }
}

function checkContainers(err, obj, spec) {
  const volumes = new Set((spec.volumes || []).map((v) => v.name));
  const used = new Set();
  for (const c of allContainers(spec)) {
    const where = `container '${c.name}'`;
    checkScripts(err, obj, c);
    const image = c.image || '';
    const tagless = !image.includes('@') && !/:[^/]+$/.test(image);
    if (!image || tagless || /:latest$/.test(image)) err(obj, `${where}: image '${image}' must carry a fixed tag or digest`);
    const res = c.resources || {};
    const req = res.requests || {};
    const lim = res.limits || {};
    if (!req.cpu || !req.memory) err(obj, `${where}: resources.requests needs cpu and memory`);
    if (!lim.memory) err(obj, `${where}: resources.limits.memory is required`);
    const seen = new Set();
    for (const m of c.volumeMounts || []) {
      if (!volumes.has(m.name)) err(obj, `${where}: volumeMounts '${m.mountPath}': no volume named '${m.name}'`);
      if (seen.has(m.mountPath)) err(obj, `${where}: mountPath '${m.mountPath}' mounted twice`);
      seen.add(m.mountPath);
      used.add(m.name);
    }
    if (!(c.volumeMounts || []).some((m) => m.mountPath === '/tmp')) {
      err(obj, `${where}: read-only root filesystem needs a writable /tmp mount (emptyDir)`);
    }
  }
  for (const v of spec.volumes || []) if (!used.has(v.name)) err(obj, `volume '${v.name}' is mounted by no container`);
}

function checkReferences(err, obj, spec, render, all) {
  const ns = obj.metadata.namespace;
  const inAny = (kind, name) => all.some((r) => r.objects.some((o) => o.kind === kind &&
    o.metadata.name === name && o.metadata.namespace === ns));
  const inRender = (kind, name) => render.objects.some((o) => o.kind === kind && o.metadata.name === name);
  for (const v of spec.volumes || []) {
    if (v.configMap && !inRender('ConfigMap', v.configMap.name)) {
      err(obj, `volume '${v.name}': ConfigMap '${v.configMap.name}' is not in this render`);
    }
    if (v.persistentVolumeClaim && !inAny('PersistentVolumeClaim', v.persistentVolumeClaim.claimName)) {
      err(obj, `volume '${v.name}': PersistentVolumeClaim '${v.persistentVolumeClaim.claimName}' is created by no kustomization in namespace '${ns}'`);
    }
  }
  for (const c of allContainers(spec)) {
    for (const ef of c.envFrom || []) {
      if (ef.configMapRef && !inRender('ConfigMap', ef.configMapRef.name)) {
        err(obj, `container '${c.name}': envFrom ConfigMap '${ef.configMapRef.name}' is not in this render`);
      }
    }
  }
  if (spec.serviceAccountName && !inAny('ServiceAccount', spec.serviceAccountName)) {
    err(obj, `serviceAccountName '${spec.serviceAccountName}' is created by no kustomization in namespace '${ns}'`);
  }
}

function checkServer(err, obj, spec, render, isGpuRender) {
  const c = (spec.containers || []).find((x) => invocationsOf(x).some((i) => i.bin === 'eqsim-server'));
  if (!c) return false;
  const sf = serverFlags(render, spec, c);
  for (const e of sf.errors) err(obj, `container '${c.name}': ${e}`);
  const flag = (n) => (sf.flags.has(n) ? sf.flags.get(n) : SERVER_DEFAULTS[n]);
  const port = Number(flag('port'));
  const metricsPort = Number(flag('metrics_port'));
  const drain = Number(flag('drain_timeout_s'));
  const ports = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
  if (ports.grpc !== port) err(obj, `container '${c.name}': containerPort 'grpc' is ${ports.grpc}, the server's --port is ${port}`);
  if (metricsPort !== 0 && ports.metrics !== metricsPort) {
    err(obj, `container '${c.name}': containerPort 'metrics' is ${ports.metrics}, the server's --metrics_port is ${metricsPort}`);
  }
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const p = c[probe];
    if (!p) err(obj, `container '${c.name}': ${probe} is missing`);
    else if (!p.grpc) err(obj, `container '${c.name}': ${probe} must be a native grpc probe (grpc.health.v1)`);
    else if (p.grpc.port !== port) err(obj, `container '${c.name}': ${probe}.grpc.port ${p.grpc.port} is not the server's --port ${port}`);
  }
  const grace = spec.terminationGracePeriodSeconds !== undefined ? spec.terminationGracePeriodSeconds : 30;
  const sleep = preStopSleepSeconds(c);
  if (!(grace > drain + sleep)) {
    err(obj, `terminationGracePeriodSeconds ${grace} must exceed --drain_timeout_s ${drain} + preStop sleep ${sleep}`);
  }
  const lp = c.livenessProbe;
  if (lp && lp.grpc) {
    const window = (lp.periodSeconds || 10) * (lp.failureThreshold || 3);
    if (window <= drain) err(obj, `livenessProbe gives up after ${window} s, within --drain_timeout_s ${drain}: a draining pod would be restarted`);
  }
  const mounts = c.volumeMounts || [];
  for (const [name, writable] of [['model_repository', false], ['data_root', false], ['state_dir', true]]) {
    const v = sf.flags.get(name);
    if (!v) {
      err(obj, `container '${c.name}': --${name} is not set`);
      continue;
    }
    const m = isUnder(v.replace(/\$\([A-Z_]+\)/g, 'x'), mounts);
    if (!m) err(obj, `container '${c.name}': --${name}=${v} is on no mounted volume`);
    else if (writable && m.readOnly) err(obj, `container '${c.name}': --${name}=${v} is on read-only mount ${m.mountPath}`);
  }
  // Encoder CPU threads: --batch_threads batches in parallel, --threads LibTorch threads each.
  const threads = Number(sf.flags.get('threads') || 0);
  const batches = Number(sf.flags.has('batch_threads') ? sf.flags.get('batch_threads') : SERVER_DEFAULTS.batch_threads);
  const cpuLimit = c.resources && c.resources.limits && c.resources.limits.cpu;
  if (threads && cpuLimit && /^\d+$/.test(String(cpuLimit)) && threads * batches > Number(cpuLimit)) {
    err(obj, `--batch_threads ${batches} x --threads ${threads} exceeds the CPU limit ${cpuLimit}: the threads would be throttled`);
  }
  const gpus = Number(((c.resources || {}).limits || {})['nvidia.com/gpu'] || 0);
  const tolerates = (spec.tolerations || []).some((t) => t.key === 'nvidia.com/gpu');
  const pinned = (spec.nodeSelector && Object.keys(spec.nodeSelector).length) || spec.affinity;
  if (isGpuRender) {
    if (gpus < 1) err(obj, `container '${c.name}': the GPU overlay must request resources.limits nvidia.com/gpu`);
    if (!tolerates) err(obj, 'the GPU overlay must tolerate the nvidia.com/gpu taint');
    if (!pinned) err(obj, 'the GPU overlay must select GPU nodes (nodeSelector or affinity)');
    if (!/cuda/.test(c.image || '')) err(obj, `container '${c.name}': the GPU overlay must run the CUDA image, not '${c.image}'`);
  } else if (gpus > 0 || /cuda/.test(c.image || '')) {
    err(obj, `container '${c.name}': only the GPU overlay may request nvidia.com/gpu or run the CUDA image`);
  }
  return { sf, port };
}

function checkJob(err, obj, spec, render) {
  if (!['Never', 'OnFailure'].includes(spec.restartPolicy)) err(obj, 'a Job pod needs restartPolicy Never or OnFailure');
  const names = new Set((spec.containers || []).map((c) => c.name));
  for (const r of ((obj.spec.podFailurePolicy || {}).rules || [])) {
    if (r.onExitCodes && r.onExitCodes.containerName && !names.has(r.onExitCodes.containerName)) {
      err(obj, `podFailurePolicy names container '${r.onExitCodes.containerName}', which does not exist`);
    }
  }
  const comp = obj.spec.completions || 1;
  if ((obj.spec.parallelism || 1) > comp) err(obj, `parallelism ${obj.spec.parallelism} exceeds completions ${comp}`);
  const sharded = (spec.containers || []).some((c) => invocationsOf(c).some((i) => i.flags.includes('shard_index')));
  if (!sharded) return;
  if (obj.spec.completionMode !== 'Indexed') err(obj, 'a sharded evaluation must be an Indexed Job (completionMode: Indexed)');
  for (const c of spec.containers || []) {
    const text = argvOf(c).join(' ');
    if (!/--shard_index=["']?\$\{?JOB_COMPLETION_INDEX/.test(text) && !/--shard_index=\$\(JOB_COMPLETION_INDEX\)/.test(text)) {
      err(obj, `container '${c.name}': --shard_index must come from JOB_COMPLETION_INDEX`);
    }
    const m = text.match(/--num_shards=["']?\$\{?\(?([A-Z_]+)/);
    const literal = text.match(/--num_shards=(\d+)/);
    const shards = literal ? Number(literal[1]) : m ? Number(envValue(render, c, m[1])) : NaN;
    if (shards !== comp) {
      err(obj, `container '${c.name}': --num_shards (${m ? 'NUM_SHARDS=' : ''}${shards}) must equal completions ${comp}`);
    }
  }
}

// ---- render-wide checks ----

function checkServices(err, render, servers) {
  const pods = render.objects.filter((o) => WORKLOADS.has(o.kind) && o.kind !== 'Job');
  const services = render.objects.filter((o) => o.kind === 'Service');
  for (const svc of services) {
    const sel = svc.spec.selector;
    if (!sel) continue;
    const targets = pods.filter((p) => selectorMatches({ matchLabels: sel }, podLabelsOf(p)));
    if (targets.length === 0) {
      err(svc, `selector ${JSON.stringify(sel)} selects no pod of this render`);
      continue;
    }
    for (const p of svc.spec.ports || []) {
      const tp = p.targetPort !== undefined ? p.targetPort : p.port;
      const ok = targets.every((t) => podSpecOf(t).containers.some((c) => (c.ports || []).some((cp) =>
        (typeof tp === 'string' ? cp.name === tp : cp.containerPort === tp))));
      if (!ok) err(svc, `port '${p.name}': targetPort ${tp} is not a container port of the selected pods`);
    }
  }
  if (servers.length) {
    const headless = services.filter((s) => s.spec.clusterIP === 'None' &&
      servers.some((d) => selectorMatches({ matchLabels: s.spec.selector }, podLabelsOf(d))));
    if (headless.length === 0) err({ kind: 'render', metadata: { name: render.name } }, 'no headless Service (clusterIP: None) selects the server pods: clients cannot round_robin');
  }
  for (const d of render.objects.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet')) {
    if (!selectorMatches(d.spec.selector, podLabelsOf(d))) err(d, 'spec.selector does not match the pod template labels');
  }
}

function checkAutoscaling(err, render) {
  const hpas = render.objects.filter((o) => o.kind === 'HorizontalPodAutoscaler');
  for (const h of hpas) {
    const ref = h.spec.scaleTargetRef;
    const target = render.objects.find((o) => o.kind === ref.kind && o.metadata.name === ref.name);
    if (!target) {
      err(h, `scaleTargetRef ${ref.kind} ${ref.name} is not in this render`);
      continue;
    }
    if (target.spec.replicas !== undefined) err(target, 'spec.replicas is set although a HorizontalPodAutoscaler owns it (every apply would reset the scale)');
    if ((h.spec.minReplicas || 1) > h.spec.maxReplicas) err(h, 'minReplicas exceeds maxReplicas');
    for (const p of render.objects.filter((o) => o.kind === 'PodDisruptionBudget')) {
      if (!selectorMatches(p.spec.selector, podLabelsOf(target))) continue;
      if (typeof p.spec.minAvailable === 'number' && p.spec.minAvailable >= (h.spec.minReplicas || 1)) {
        err(p, `minAvailable ${p.spec.minAvailable} >= HPA minReplicas ${h.spec.minReplicas}: node drains would block`);
      }
    }
  }
  for (const p of render.objects.filter((o) => o.kind === 'PodDisruptionBudget')) {
    const any = render.objects.some((o) => WORKLOADS.has(o.kind) && o.kind !== 'Job' && selectorMatches(p.spec.selector, podLabelsOf(o)));
    if (!any) err(p, 'selector selects no pod of this render');
  }
}

function checkMonitors(err, render) {
  for (const sm of render.objects.filter((o) => o.kind === 'ServiceMonitor')) {
    const svcs = render.objects.filter((o) => o.kind === 'Service' &&
      selectorMatches(sm.spec.selector, (o.metadata && o.metadata.labels) || {}));
    if (svcs.length === 0) {
      err(sm, 'selector matches no Service of this render');
      continue;
    }
    for (const ep of sm.spec.endpoints || []) {
      const exposing = svcs.filter((s) => (s.spec.ports || []).some((p) => p.name === ep.port));
      if (exposing.length === 0) err(sm, `endpoint port '${ep.port}' is a port of no selected Service`);
      if (exposing.length > 1) err(sm, `endpoint port '${ep.port}' is exposed by ${exposing.length} selected Services: every pod would be scraped twice`);
    }
  }
}

// PrometheusRule groups are a Prometheus rules file: promtool parses every expression.
let promtool;
const promtoolCache = new Map();  // rules JSON -> error string or ''
function checkPrometheusRules(err, render, opts) {
  for (const pr of render.objects.filter((o) => o.kind === 'PrometheusRule')) {
    const cacheKey = JSON.stringify([pr.metadata.name, pr.spec.groups || []]);
    if (promtoolCache.has(cacheKey)) {
      if (promtoolCache.get(cacheKey)) err(pr, promtoolCache.get(cacheKey));
      continue;
    }
    promtoolCache.set(cacheKey, '');
    if (!promtoolAvailable()) {
      if (opts.log) opts.log('note: promtool not installed: PrometheusRule expressions not checked');
      return;
    }
    const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'eqsim-rules-'));
    const file = path.join(dir, 'rules.json');
    try {
      fs.writeFileSync(file, JSON.stringify({ groups: pr.spec.groups || [] }));
      const steps = [['check', 'rules', file]];
      // Unit tests of the alerts (tests/k8s/alerts_test.yaml reads rules.json beside it).
      const tests = path.join(__dirname, 'alerts_test.yaml');
      if (fs.existsSync(tests) && pr.metadata.name === 'eqsim-server') {
        fs.copyFileSync(tests, path.join(dir, 'alerts_test.yaml'));
        steps.push(['test', 'rules', path.join(dir, 'alerts_test.yaml')]);
      }
      for (const argv of steps) {
        try {
          execFileSync('promtool', argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        } catch (e) {
          const out = `${e.stdout || ''}${e.stderr || ''}`.split('\n').map((l) => l.trim())
            .filter((l) => l && !/^(Checking|SUCCESS|Unit Testing)/.test(l)).join(' | ');
          const msg = `promtool ${argv[0]} rules: ${out || e.message}`;
          promtoolCache.set(cacheKey, msg);
          err(pr, msg);
          break;
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

// deploy/prometheus-adapter/values.yaml must produce every Pods/Object metric an HPA uses, and
// its queries must parse once the adapter's templates are filled in.
function checkAdapter(errors, renders, opts) {
  if (!opts.adapterRules) return;
  const { file, values } = opts.adapterRules;
  const rules = ((values || {}).rules || {}).custom || [];
  const produced = [];
  const queries = [];
  rules.forEach((r, i) => {
    const where = `${file}: rules.custom[${i}]`;
    const series = String(r.seriesQuery || '').match(/^\s*([A-Za-z_:][A-Za-z0-9_:]*)/);
    if (!series) {
      errors.push(`${where}: seriesQuery names no metric`);
      return;
    }
    const ov = (r.resources || {}).overrides || {};
    for (const label of ['namespace', 'pod']) {
      if (!ov[label] || ov[label].resource !== label) errors.push(`${where}: resources.overrides must map label '${label}' to resource '${label}' for a Pods metric`);
    }
    const name = r.name || {};
    let as = series[1];
    if (name.matches) {
      const m = series[1].match(new RegExp(name.matches));
      if (!m) errors.push(`${where}: name.matches '${name.matches}' does not match series '${series[1]}'`);
      else if (name.as) as = series[1].replace(new RegExp(name.matches), name.as.replace(/\$\{?(\d)\}?/g, '$$$1'));
    }
    produced.push(as);
    if (!r.metricsQuery) errors.push(`${where}: no metricsQuery`);
    else {
      queries.push({ where, expr: r.metricsQuery.replace(/<<\.Series>>/g, series[1])
        .replace(/<<\.LabelMatchers>>/g, 'namespace="eqsim",pod=~"eqsim-server-.*"')
        .replace(/<<\.GroupBy>>/g, 'pod') });
    }
  });
  for (const r of renders) {
    for (const h of r.objects.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
      (h.spec.metrics || []).forEach((m, i) => {
        const metric = (m.pods || m.object || {}).metric;
        if (metric && !produced.includes(metric.name)) {
          errors.push(`${r.name}: ${id(h)}: spec.metrics[${i}] uses custom metric '${metric.name}', which no rule of ${file} produces`);
        }
      });
    }
  }
  if (queries.length && promtoolAvailable()) {
    const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'eqsim-adapter-'));
    try {
      queries.forEach((q, i) => {
        const f = path.join(dir, `q${i}.json`);
        fs.writeFileSync(f, JSON.stringify({ groups: [{ name: 'adapter', rules: [{ record: 'adapter:check', expr: q.expr }] }] }));
        try {
          execFileSync('promtool', ['check', 'rules', f], { stdio: ['ignore', 'pipe', 'pipe'] });
        } catch (e) {
          const out = `${e.stdout || ''}${e.stderr || ''}`.split('\n').map((l) => l.trim())
            .filter((l) => l && !/^(Checking|SUCCESS)/.test(l)).join(' | ');
          errors.push(`${q.where}: metricsQuery does not parse: ${out}`);
        }
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

function promtoolAvailable() {
  if (promtool === undefined) {
    try {
      execFileSync('promtool', ['--version'], { stdio: 'ignore' });
      promtool = true;
    } catch (e) {
      promtool = false;
    }
  }
  return promtool;
}

function checkUnique(err, render) {
  const seen = new Set();
  for (const o of render.objects) {
    const k = `${o.apiVersion}/${o.kind}/${o.metadata.namespace || ''}/${o.metadata.name}`;
    if (seen.has(k)) err(o, 'defined twice in this render');
    seen.add(k);
    if (!CLUSTER_SCOPED.has(o.kind) && !o.metadata.namespace) err(o, 'has no namespace');
  }
}

// ---- flags against the built binaries ----

// The flags a program accepts, from its help: `--helpfull` (absl) for the servers and trainers,
// `eqsim <subcommand> --help` for the CLI, whose subcommands accept only their own flags (with
// --a-b and --a_b the same flag). null when the program is not built or prints no flags.
const helpCache = {};
function knownFlags(binDir, bin, sub) {
  const file = path.join(binDir, bin);
  const key = `${file} ${sub || ''}`;
  if (!(key in helpCache)) {
    if (!fs.existsSync(file)) {
      helpCache[key] = null;
    } else {
      const argv = bin === 'eqsim' ? [sub || 'help', '--help'] : ['--helpfull'];
      let out = '';
      try {
        out = execFileSync(file, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
      } catch (e) {
        out = `${e.stdout || ''}${e.stderr || ''}`;  // absl exits 1 after printing help
      }
      const names = new Set([...out.matchAll(/^\s+--([A-Za-z0-9_-]+)[=\s]/gm)]
        .map((m) => (bin === 'eqsim' ? m[1].replace(/-/g, '_') : m[1])));
      helpCache[key] = names.size ? names : null;
    }
  }
  return helpCache[key];
}

// Runs `eqsim-server <args> --version` with the container's flag files written out: absl parses
// every flag (names and values, e.g. an integer flag given "two") before printing the version.
// Returns null when it parses, else the error.
function parseServerArgs(binDir, render, spec, c) {
  const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'eqsim-flags-'));
  try {
    const args = (c.args || []).map((a) => {
      const expanded = a.replace(/\$\(([A-Z_]+)\)/g, (_, v) => `k8s-${v.toLowerCase()}`);
      if (!expanded.startsWith('--flagfile=')) return expanded;
      const files = expanded.slice('--flagfile='.length).split(',').map((f, i) => {
        const r = configMapFile(render, spec, c, f);
        const local = path.join(dir, `${i}-${path.basename(f)}`);
        fs.writeFileSync(local, r.text || '');
        return local;
      });
      return `--flagfile=${files.join(',')}`;
    });
    execFileSync(path.join(binDir, 'eqsim-server'), [...args, '--version'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
    return null;
  } catch (e) {
    return `${e.stderr || e.message}`.trim().split('\n').slice(0, 3).join(' | ');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function checkFlags(err, renders, opts) {
  if (!opts.binDir) return;
  const skipped = new Set();
  for (const r of renders) {
    for (const o of r.objects) {
      const spec = podSpecOf(o);
      if (!spec) continue;
      for (const c of allContainers(spec)) {
        for (const inv of invocationsOf(c)) {
          const known = knownFlags(opts.binDir, inv.bin, inv.sub);
          const label = inv.sub ? `${inv.bin} ${inv.sub}` : inv.bin;
          if (!known) {
            skipped.add(label);
            continue;
          }
          let names = inv.bin === 'eqsim' ? inv.flags.map((f) => f.replace(/-/g, '_')) : inv.flags;
          if (inv.bin === 'eqsim-server') {
            names = serverFlags(r, spec, c).list.map((x) => x.name);
            const parsed = parseServerArgs(opts.binDir, r, spec, c);
            if (parsed) err(o, `container '${c.name}': eqsim-server does not accept its flags: ${parsed}`, r.name);
          }
          for (const n of names) {
            if (!known.has(n)) err(o, `container '${c.name}': ${label} has no flag --${n} (see its --help in ${opts.binDir})`, r.name);
          }
        }
      }
    }
  }
  if (opts.log) {
    for (const b of skipped) opts.log(`note: ${b} is not built in ${opts.binDir} (or prints no flags): its flags were not checked`);
  }
}

function check(renders, opts = {}) {
  const errors = [];
  for (const render of renders) {
    const err = (obj, msg, name) => errors.push(`${name || render.name}: ${id(obj)}: ${msg}`);
    const isGpu = /(^|\/)gpu($|\/)/.test(render.name);
    checkUnique(err, render);
    const servers = [];
    for (const o of render.objects) {
      const spec = podSpecOf(o);
      if (!spec) continue;
      checkPodSecurity(err, o, spec);
      checkContainers(err, o, spec);
      checkReferences(err, o, spec, render, renders);
      if (checkServer(err, o, spec, render, isGpu)) servers.push(o);
      if (o.kind === 'Job') checkJob(err, o, spec, render);
    }
    if (isGpu && servers.length === 0) err({ kind: 'render', metadata: { name: render.name } }, 'the GPU overlay runs no eqsim-server');
    checkServices(err, render, servers);
    checkAutoscaling(err, render);
    checkMonitors(err, render);
    checkPrometheusRules(err, render, opts);
  }
  if (opts.flags !== false) checkFlags((obj, msg, name) => errors.push(`${name}: ${id(obj)}: ${msg}`), renders, opts);
  checkAdapter(errors, renders, opts);
  return errors;
}

// Only the flags used in the manifests against the built programs' help; returns error strings
// and whether every program was found.
function checkFlagsOnly(renders, opts) {
  const errors = [];
  const skipped = [];
  checkFlags((obj, msg, name) => errors.push(`${name}: ${id(obj)}: ${msg}`), renders,
    { ...opts, log: (m) => { skipped.push(m); if (opts.log) opts.log(m); } });
  return { errors, skipped };
}

module.exports = { check, checkFlagsOnly, invocationsOf, serverFlags, selectorMatches };
