#!/usr/bin/env node
'use strict';
// Renders every Kustomization under deploy/ with `kubectl kustomize` and validates each object:
//   1. against the Kubernetes OpenAPI schemas (kubernetes-models) or, for the ServiceMonitor,
//      the prometheus-operator CRD schema (@kubernetes-models/prometheus-operator);
//   2. for unknown fields (typos), from the same packages' type declarations (strict_fields.js);
//   3. against eqsim's own deployment rules (rules.js): probes, security, ports, grace period vs
//      drain timeout, selectors, references, the GPU overlay, the sharded Job;
//   4. optionally, the flags used in the manifests against `<binary> --helpfull` of the built
//      binaries (--bin-dir), so a renamed flag breaks this test instead of a rollout.
// With --self-test it also applies known mistakes to the rendered objects and to a copy of
// deploy/ and fails unless every one of them is reported.
//
// --flags-only does only step 4 (exit 77 when none of the programs is built).
// Usage: node validate.js --deploy-dir DIR [--bin-dir DIR] [--self-test] [--list] [--flags-only]
// Exit: 0 valid, 1 invalid, 2 usage or tool error, 77 nothing to check (--flags-only).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const yaml = require('js-yaml');
const { StrictFieldChecker, declarationFor } = require('./strict_fields');
const rules = require('./rules');

function parseArgs(argv) {
  const opts = { deployDir: null, binDir: null, selfTest: false, list: false, flagsOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--deploy-dir') opts.deployDir = next();
    else if (a === '--bin-dir') opts.binDir = next();
    else if (a === '--self-test') opts.selfTest = true;
    else if (a === '--list') opts.list = true;
    else if (a === '--flags-only') opts.flagsOnly = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').slice(2, 16)
        .map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else usage(`unknown argument '${a}'`);
  }
  if (!opts.deployDir) usage('--deploy-dir is required');
  return opts;
}

function usage(msg) {
  process.stderr.write(`validate.js: ${msg} (see --help)\n`);
  process.exit(2);
}

// Every folder under deployDir holding a kustomization.yaml, in a stable order.
function findKustomizations(deployDir) {
  const out = [];
  const walk = (dir) => {
    const entries = fs.readdirSync(dir, { withFileTypes: true })
      .sort((a, b) => a.name.localeCompare(b.name));
    if (entries.some((e) => e.isFile() && /^kustomization\.ya?ml$/.test(e.name))) out.push(dir);
    for (const e of entries) {
      if (e.isDirectory() && e.name !== 'node_modules' && !e.name.startsWith('.')) {
        walk(path.join(dir, e.name));
      }
    }
  };
  walk(deployDir);
  return out;
}

function render(dir) {
  try {
    return execFileSync('kubectl', ['kustomize', dir], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20,
    });
  } catch (e) {
    throw new Error(`kubectl kustomize ${dir} failed: ${(e.stderr || e.message).trim()}`);
  }
}

function loadObjects(text, source) {
  const docs = yaml.loadAll(text, null, { filename: source, schema: yaml.DEFAULT_SCHEMA });
  return docs.filter((d) => d !== null && d !== undefined);
}

// apiVersion + kind -> the model module that validates it.
function modelModuleFor(apiVersion, kind) {
  const slash = apiVersion.indexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  if (group === 'monitoring.coreos.com') {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

class SchemaRegistry {
  constructor() {
    this.models = {};
    this.decls = {};
  }

  // Returns { Model, key } or throws when no schema exists for the type.
  lookup(apiVersion, kind) {
    const key = `${apiVersion}/${kind}`;
    if (!this.models[key]) {
      const mod = modelModuleFor(apiVersion, kind);
      let resolved;
      try {
        resolved = require.resolve(mod);
      } catch (e) {
        return null;
      }
      const Model = require(resolved)[kind];
      if (!Model) return null;
      this.models[key] = Model;
      const iface = `I${kind}`;
      this.decls[key] = { file: declarationFor(resolved), iface };
    }
    return { Model: this.models[key], key };
  }

  strictChecker() {
    if (!this.checker) this.checker = new StrictFieldChecker(this.decls);
    return this.checker;
  }
}

function describe(obj) {
  const ns = obj.metadata && obj.metadata.namespace ? `${obj.metadata.namespace}/` : '';
  const name = obj.metadata && obj.metadata.name ? obj.metadata.name : '<no name>';
  return `${obj.kind || '<no kind>'} ${ns}${name}`;
}

// Schema + unknown-field validation of one object. Returns error strings.
function validateObject(registry, obj) {
  if (!obj || typeof obj !== 'object' || !obj.apiVersion || !obj.kind) {
    return ['not a Kubernetes object (apiVersion and kind are required)'];
  }
  const found = registry.lookup(obj.apiVersion, obj.kind);
  if (!found) return [`no schema for ${obj.apiVersion} ${obj.kind}: unknown or unsupported type`];
  const errors = [];
  try {
    new found.Model(obj).validate();
  } catch (e) {
    for (const part of String(e.message).split(', data')) {
      errors.push(`schema: ${part.startsWith('data') ? part : 'data' + part}`);
    }
  }
  return errors;
}

function validateStrict(registry, objs) {
  const checker = registry.strictChecker();
  return objs.map((obj) => {
    const found = obj && obj.apiVersion && obj.kind && registry.lookup(obj.apiVersion, obj.kind);
    return found ? checker.check(found.key, obj) : [];
  });
}

// Validates a list of renders [{name, objects}]; returns error strings "render: object: msg".
const registry = new SchemaRegistry();
function validateRenders(renders, opts) {
  const errors = [];
  for (const r of renders) {
    r.objects.forEach((o) => { if (o && o.apiVersion && o.kind) registry.lookup(o.apiVersion, o.kind); });
  }
  for (const r of renders) {
    const strict = validateStrict(registry, r.objects);
    r.objects.forEach((obj, i) => {
      for (const e of validateObject(registry, obj)) errors.push(`${r.name}: ${describe(obj)}: ${e}`);
      for (const e of strict[i]) errors.push(`${r.name}: ${describe(obj)}: ${e}`);
    });
  }
  for (const e of rules.check(renders, opts)) errors.push(e);
  return errors;
}

function renderAll(deployDir) {
  return findKustomizations(deployDir).map((dir) => {
    const name = path.relative(deployDir, dir) || '.';
    return { name, objects: loadObjects(render(dir), name) };
  });
}

// ---- self-test: known mistakes must be reported ----

function clone(x) {
  return JSON.parse(JSON.stringify(x));
}

function findObj(renders, renderName, kind, name) {
  const r = renders.find((x) => x.name === renderName);
  const o = r && r.objects.find((x) => x.kind === kind && (!name || x.metadata.name === name));
  if (!o) throw new Error(`self-test: ${renderName} has no ${kind} ${name || ''}`);
  return o;
}

const MUTATIONS = [
  ['typo in a container field', 'unknown field \'imagePullPolcy\'', (rs) => {
    const c = findObj(rs, 'overlays/cpu', 'Deployment').spec.template.spec.containers[0];
    c.imagePullPolcy = c.imagePullPolicy;
    delete c.imagePullPolicy;
  }],
  ['string where an integer belongs', 'must be integer', (rs) => {
    findObj(rs, 'overlays/cpu', 'Service', 'eqsim-server').spec.ports[0].port = '8500x';
  }],
  ['typo in a ServiceMonitor endpoint (CRD)', 'unknown field \'intervl\'', (rs) => {
    const ep = findObj(rs, 'overlays/gpu', 'ServiceMonitor').spec.endpoints[0];
    ep.intervl = ep.interval;
    delete ep.interval;
  }],
  ['HPA metric target without type', 'must have required property type', (rs) => {
    delete findObj(rs, 'overlays/cpu', 'HorizontalPodAutoscaler').spec.metrics[0].resource.target.type;
  }],
  ['grace period shorter than the drain', 'terminationGracePeriodSeconds', (rs) => {
    findObj(rs, 'overlays/gpu', 'Deployment').spec.template.spec.terminationGracePeriodSeconds = 30;
  }],
  ['readiness probe on the wrong port', 'readinessProbe', (rs) => {
    findObj(rs, 'overlays/cpu', 'Deployment').spec.template.spec.containers[0]
      .readinessProbe.grpc.port = 9000;
  }],
  ['root allowed', 'runAsNonRoot', (rs) => {
    const spec = findObj(rs, 'jobs/train', 'Job').spec.template.spec;
    delete spec.securityContext.runAsNonRoot;
    delete spec.containers[0].securityContext.runAsNonRoot;
  }],
  ['shard count differs from completions', 'NUM_SHARDS', (rs) => {
    findObj(rs, 'jobs/eval-sharded', 'Job').spec.completions = 5;
  }],
  ['mount of an undeclared volume', 'no volume named', (rs) => {
    findObj(rs, 'overlays/cpu', 'Deployment').spec.template.spec.containers[0]
      .volumeMounts[0].name = 'flagz';
  }],
  ['Service selecting no pod', 'selects no pod', (rs) => {
    findObj(rs, 'overlays/cpu', 'Service', 'eqsim-server-headless').spec.selector['app.kubernetes.io/component'] = 'serve';
  }],
  ['GPU overlay without a GPU', 'nvidia.com/gpu', (rs) => {
    delete findObj(rs, 'overlays/gpu', 'Deployment').spec.template.spec.containers[0]
      .resources.limits['nvidia.com/gpu'];
  }],
  ['claim of a PVC nobody creates', 'PersistentVolumeClaim', (rs) => {
    findObj(rs, 'jobs/train', 'Job').spec.template.spec.volumes[0].persistentVolumeClaim.claimName = 'eqsim-model';
  }],
  ['a broken alert expression', 'promtool check rules', (rs) => {
    findObj(rs, 'overlays/cpu', 'PrometheusRule').spec.groups[0].rules[1].expr = 'sum by (method (rate(eqsim_requests_total[5m]))';
  }],
  ['an alert that no longer fires when it should', 'promtool test rules', (rs) => {
    const r = findObj(rs, 'overlays/gpu', 'PrometheusRule').spec.groups[0].rules[1];
    r.expr = r.expr.replace('> 0.05', '> 0.5');
  }],
  ['an HPA metric the Prometheus adapter does not serve', 'which no rule of', (rs) => {
    findObj(rs, 'overlays/cpu', 'HorizontalPodAutoscaler').spec.metrics[1].pods.metric.name = 'eqsim_queue_length';
  }],
  ['a shell bug in a Job script', 'shellcheck', (rs) => {
    const c = findObj(rs, 'jobs/eval-sharded', 'Job').spec.template.spec.containers[0];
    c.command[2] = c.command[2].replace('mkdir -p "$out"', 'mkdir -p "$out');
  }],
  ['a server flag the probes don\'t follow', 'port', (rs) => {
    const cm = findObj(rs, 'overlays/cpu', 'ConfigMap');
    cm.data['overlay.flags'] += '--port=8600\n';
  }],
];

function selfTest(deployDir, baseline, opts) {
  const failures = [];
  for (const [what, expect, mutate] of MUTATIONS) {
    const renders = clone(baseline);
    mutate(renders);
    const errs = validateRenders(renders, opts);
    const hit = errs.filter((e) => e.includes(expect));
    if (hit.length === 0) {
      failures.push(`self-test '${what}': not reported (expected an error containing "${expect}"; got ${errs.length} other error(s)${errs.length ? ': ' + errs[0] : ''})`);
    } else {
      process.stderr.write(`  caught: ${what}: ${hit[0]}\n`);
    }
  }
  // End to end: a typo in a source file under deploy/ must fail through kubectl kustomize too.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eqsim-deploy-'));
  try {
    fs.cpSync(deployDir, tmp, { recursive: true });
    const f = path.join(tmp, 'base', 'deployment.yaml');
    const text = fs.readFileSync(f, 'utf8');
    if (!text.includes('readOnlyRootFilesystem: true')) throw new Error('self-test: base/deployment.yaml changed shape');
    fs.writeFileSync(f, text.replace('readOnlyRootFilesystem: true', 'readOnlyRootFileSystem: true'));
    const errs = validateRenders(renderAll(tmp), opts);
    const hit = errs.filter((e) => e.includes("unknown field 'readOnlyRootFileSystem'"));
    if (hit.length === 0) failures.push('self-test: a typo in deploy/base/deployment.yaml was not reported');
    else process.stderr.write(`  caught: typo in base/deployment.yaml: ${hit[0]}\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return failures;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const deployDir = fs.realpathSync(path.resolve(opts.deployDir));
  let renders;
  try {
    renders = renderAll(deployDir);
  } catch (e) {
    process.stderr.write(`FAIL ${e.message}\n`);
    return 1;
  }
  if (renders.length === 0) {
    process.stderr.write(`FAIL no kustomization.yaml under ${deployDir}\n`);
    return 1;
  }
  const adapterFile = path.join(deployDir, 'prometheus-adapter', 'values.yaml');
  const adapterRules = fs.existsSync(adapterFile)
    ? { file: 'prometheus-adapter/values.yaml', values: yaml.load(fs.readFileSync(adapterFile, 'utf8')) }
    : null;
  const ruleOpts = { binDir: opts.binDir, adapterRules, log: (m) => process.stderr.write(m + '\n') };
  let total = 0;
  for (const r of renders) {
    total += r.objects.length;
    const kinds = r.objects.map((o) => o.kind).join(', ');
    process.stderr.write(`rendered ${r.name}: ${r.objects.length} objects (${kinds})\n`);
    if (opts.list) for (const o of r.objects) process.stdout.write(`${r.name}\t${describe(o)}\n`);
  }
  if (opts.flagsOnly) {
    if (!opts.binDir) usage('--flags-only needs --bin-dir');
    const { errors: flagErrors, skipped } = rules.checkFlagsOnly(renders, ruleOpts);
    for (const e of flagErrors) process.stderr.write(`ERROR ${e}\n`);
    process.stdout.write(`flags of the manifests against ${opts.binDir}: ` +
      `${flagErrors.length === 0 ? 'OK' : flagErrors.length + ' error(s)'}\n`);
    if (flagErrors.length === 0 && skipped.length > 0 &&
        !['eqsim-server', 'eqsim-train', 'eqsim'].some((b) => fs.existsSync(path.join(opts.binDir, b)))) {
      return 77;
    }
    return flagErrors.length === 0 ? 0 : 1;
  }
  const errors = validateRenders(renders, { ...ruleOpts, flags: false });
  for (const e of errors) process.stderr.write(`ERROR ${e}\n`);
  let failures = [];
  if (opts.selfTest) {
    process.stderr.write(`self-test: ${MUTATIONS.length + 1} known mistakes must be reported\n`);
    failures = selfTest(deployDir, renders, { binDir: null, adapterRules, log: () => {} });
    for (const f of failures) process.stderr.write(`ERROR ${f}\n`);
  }
  const bad = errors.length + failures.length;
  process.stdout.write(`${renders.length} kustomizations, ${total} objects validated: ` +
    `${bad === 0 ? 'OK' : bad + ' error(s)'}\n`);
  return bad === 0 ? 0 : 1;
}

if (require.main === module) {
  try {
    process.exit(main());
  } catch (e) {
    process.stderr.write(`validate.js: ${e.stack || e.message}\n`);
    process.exit(2);
  }
}

module.exports = { validateRenders, renderAll, findKustomizations, modelModuleFor };
