'use strict';
// Unknown-field detection for Kubernetes objects.
//
// The JSON schemas compiled into kubernetes-models follow the upstream OpenAPI documents, which
// allow unknown properties: a typo such as `imagePullPolcy` passes them, and the API server
// would reject it (kubectl apply uses strict field validation) or, with older clients, drop it.
// The same packages ship TypeScript declarations that list every field of every type, so this
// module asks the TypeScript type checker for the declared properties and reports each key of
// an object that its type does not declare.
const path = require('path');
const ts = require('typescript');

function levenshtein(a, b) {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) dp[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      dp[i][j] = Math.min(dp[i - 1][j] + 1, dp[i][j - 1] + 1,
        dp[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return dp[a.length][b.length];
}

class StrictFieldChecker {
  // declarationFiles: { key -> { file: absolute .d.ts path, iface: interface name } }
  constructor(declarationFiles) {
    this.entries = declarationFiles;
    const roots = Object.values(declarationFiles).map((e) => e.file);
    this.program = ts.createProgram(roots, {
      noEmit: true,
      skipLibCheck: true,
      types: [],
      moduleResolution: ts.ModuleResolutionKind.Node10,
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2020,
    });
    this.checker = this.program.getTypeChecker();
    this.rootTypes = {};
    for (const [key, e] of Object.entries(declarationFiles)) {
      const sf = this.program.getSourceFile(e.file);
      if (!sf) throw new Error(`strict fields: cannot load ${e.file}`);
      const moduleSymbol = this.checker.getSymbolAtLocation(sf);
      const exported = moduleSymbol && this.checker.getExportsOfModule(moduleSymbol)
        .find((s) => s.getName() === e.iface);
      if (!exported) throw new Error(`strict fields: ${e.file} exports no ${e.iface}`);
      this.rootTypes[key] = this.checker.getDeclaredTypeOfSymbol(exported);
    }
  }

  // Returns a list of "path: unknown field 'x'" messages.
  check(key, value) {
    const type = this.rootTypes[key];
    if (!type) throw new Error(`strict fields: no type registered for ${key}`);
    const errors = [];
    this.walk(value, type, '', errors, 0);
    return errors;
  }

  members(type) {
    if (type.isUnion()) {
      return type.types.filter((t) => !(t.flags & (ts.TypeFlags.Undefined | ts.TypeFlags.Null)));
    }
    return [type];
  }

  walk(value, type, at, errors, depth) {
    if (value === null || value === undefined || depth > 64) return;
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    const c = this.checker;
    const members = this.members(type);
    if (Array.isArray(value)) {
      const arrayType = members.find((t) => c.isArrayType(t) || c.isTupleType(t));
      if (!arrayType) return;  // a type mismatch: the JSON schema reports it
      const elem = c.getTypeArguments(arrayType)[0];
      if (!elem) return;
      value.forEach((v, i) => this.walk(v, elem, `${at}[${i}]`, errors, depth + 1));
      return;
    }
    if (typeof value !== 'object') return;
    const objectType = members.find((t) => (t.flags & ts.TypeFlags.Object) &&
      !c.isArrayType(t) && !c.isTupleType(t));
    if (!objectType) return;
    const index = c.getIndexInfoOfType(objectType, ts.IndexKind.String);
    const props = c.getPropertiesOfType(objectType);
    if (index) {
      for (const [k, v] of Object.entries(value)) {
        const prop = objectType.getProperty(k);
        const t = prop ? c.getTypeOfSymbol(prop) : index.type;
        this.walk(v, t, at ? `${at}.${k}` : k, errors, depth + 1);
      }
      return;
    }
    if (props.length === 0) return;  // an opaque object (e.g. RawExtension-like): nothing to check
    for (const [k, v] of Object.entries(value)) {
      const where = at ? `${at}.${k}` : k;
      const prop = objectType.getProperty(k);
      if (!prop) {
        const names = props.map((p) => p.getName());
        const best = names.map((n) => [levenshtein(k.toLowerCase(), n.toLowerCase()), n])
          .sort((a, b) => a[0] - b[0])[0];
        const hint = best && best[0] <= Math.max(2, Math.floor(k.length / 3))
          ? ` (did you mean '${best[1]}'?)` : '';
        errors.push(`${where}: unknown field '${k}'${hint}`);
        continue;
      }
      this.walk(v, c.getTypeOfSymbol(prop), where, errors, depth + 1);
    }
  }
}

// Where the .d.ts of a model module lives, given the resolved .js file.
function declarationFor(jsFile) {
  return path.join(path.dirname(jsFile), path.basename(jsFile, '.js') + '.d.ts');
}

module.exports = { StrictFieldChecker, declarationFor, levenshtein };
