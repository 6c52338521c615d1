"""Queue-related sites in one parsed file: constructors, adds, processors, handlers, with
their options evaluated as far as the source says them (literals, consts, enums, spreads of
consts in the same file; anything built at run time stays `unresolved`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

CLASSES = {"Queue", "Worker", "QueueEvents", "FlowProducer", "QueueScheduler"}
LIBRARIES = {"bull": "bull", "bullmq": "bullmq", "@nestjs/bull": "bull", "@nestjs/bullmq": "bullmq"}
METHODS = {"add", "addBulk", "process", "upsertJobScheduler", "on", "once", "close", "getRepeatableJobs",
           "removeRepeatable", "removeRepeatableByKey", "getNextJob"}
EVENTS = {"failed", "stalled", "error", "completed", "active", "progress", "drained", "paused", "resumed",
          "waiting", "removed", "cleaned", "global:failed", "global:completed", "global:stalled"}


HEALTH_ROUTES = ("health", "ready", "live")


class Unresolved(str):
    """An expression the source does not pin down (kept as its text)."""


@dataclass
class Site:
    file: str
    line: int
    column: int
    kind: str
    receiver: str | None = None      # the binding it is called on / assigned to
    queue: object = None              # str, Unresolved, or None
    library: str | None = None
    options: dict = field(default_factory=dict)
    data: object = None               # add(): the data argument, evaluated
    data_text: str = ""
    event: str | None = None
    processor: object = None          # the processor's function node (process, Worker)
    snippet: str = ""


def text(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


def _string(node) -> str | None:
    if node.type == "string":
        return "".join(text(c) for c in node.named_children if c.type in ("string_fragment", "escape_sequence"))
    return None


class FileScan:
    def __init__(self, path: str, tree, source: bytes):
        self.path, self.tree, self.source = path, tree, source
        self.lines = source.decode("utf-8", "replace").splitlines()
        self.consts: dict[str, object] = {}      # name -> value node
        self.classes: dict[str, tuple[str, str]] = {}  # local name -> (library, class)
        self.functions: dict[str, object] = {}   # name -> function node
        self.sites: list[Site] = []
        self.signals: list[Site] = []             # process.on('SIGTERM' | 'SIGINT')
        self.loops: dict[str, str] = {}           # `for (const w of workers)`: w -> workers
        self.collections: dict[str, int] = {}     # module-level `const cache = new Map()` -> line
        self._collect(tree.root_node)
        self._module_collections(tree.root_node)
        self._sites(tree.root_node, None)

    # -- declarations ---------------------------------------------------------------------
    def _collect(self, root) -> None:
        stack = [root]
        while stack:
            n = stack.pop()
            t = n.type
            if t == "import_statement":
                src = n.child_by_field_name("source")
                lib = LIBRARIES.get(_string(src) or "") if src is not None else None
                if lib:
                    for c in _walk(n):
                        if c.type == "import_specifier":
                            name, alias = c.child_by_field_name("name"), c.child_by_field_name("alias")
                            self.classes[text(alias or name)] = (lib, text(name))
                        elif c.type == "import_clause" and c.named_children and c.named_children[0].type == "identifier":
                            self.classes[text(c.named_children[0])] = (lib, "Queue" if lib == "bull" else "default")
            elif t == "variable_declarator":
                name, value = n.child_by_field_name("name"), n.child_by_field_name("value")
                if value is not None:
                    req = _require(value)
                    if req in LIBRARIES and name is not None:
                        lib = LIBRARIES[req]
                        if name.type == "identifier":
                            self.classes[text(name)] = (lib, "Queue" if lib == "bull" else "default")
                        elif name.type == "object_pattern":
                            for c in name.named_children:
                                if c.type == "shorthand_property_identifier_pattern":
                                    self.classes[text(c)] = (lib, text(c))
                                elif c.type == "pair_pattern":
                                    self.classes[text(c.child_by_field_name("value"))] = (
                                        lib, text(c.child_by_field_name("key")))
                    elif name is not None and name.type == "identifier":
                        if value.type in ("arrow_function", "function_expression", "function"):
                            self.functions[text(name)] = value
                        else:
                            self.consts[text(name)] = value
            elif t == "for_in_statement":
                left, right = n.child_by_field_name("left"), n.child_by_field_name("right")
                if left is not None and right is not None and left.type == "identifier" and right.type == "identifier":
                    self.loops[text(left)] = text(right)
            elif t == "function_declaration":
                name = n.child_by_field_name("name")
                if name is not None:
                    self.functions[text(name)] = n
            elif t == "enum_declaration":
                ename = text(n.child_by_field_name("name"))
                body = n.child_by_field_name("body")
                for m in (body.named_children if body is not None else []):
                    if m.type == "enum_assignment":
                        self.consts[f"{ename}.{text(m.child_by_field_name('name'))}"] = m.child_by_field_name("value")
            stack.extend(reversed(n.named_children))

    def _module_collections(self, root) -> None:
        """Top-level `const x = new Map() | new Set() | [] | {}`: what a processor that adds to
        it per job keeps for the life of the process."""
        for n in root.named_children:
            if n.type == "export_statement" and n.named_children:
                n = n.named_children[0]
            if n.type not in ("lexical_declaration", "variable_declaration"):
                continue
            for d in n.named_children:
                if d.type != "variable_declarator":
                    continue
                name, value = d.child_by_field_name("name"), d.child_by_field_name("value")
                if name is None or value is None or name.type != "identifier":
                    continue
                if value.type in ("array", "object") and not value.named_children or (
                        value.type == "new_expression" and text(value.child_by_field_name("constructor")) in ("Map", "Set")):
                    self.collections[text(name)] = d.start_point[0] + 1

    # -- evaluation -------------------------------------------------------------------------
    def value(self, node, depth: int = 0):
        if node is None:
            return None
        if depth > 8:
            return Unresolved(text(node))
        t = node.type
        if t in ("parenthesized_expression", "as_expression", "satisfies_expression", "non_null_expression",
                 "type_assertion"):
            return self.value(node.named_children[0], depth + 1) if node.named_children else None
        if t == "string":
            return _string(node)
        if t == "template_string":
            parts = []
            for c in node.named_children:
                if c.type == "string_fragment":
                    parts.append(text(c))
                elif c.type == "template_substitution":
                    v = self.value(c.named_children[0], depth + 1) if c.named_children else None
                    if not isinstance(v, (str, int, float)) or isinstance(v, Unresolved):
                        return Unresolved(text(node))
                    parts.append(str(v))
            return "".join(parts) if parts or not node.named_children else _string(node)
        if t == "number":
            s = text(node).replace("_", "")
            try:
                return int(s, 0) if s.isdigit() or s.lower().startswith(("0x", "0o", "0b")) else float(s)
            except ValueError:
                return Unresolved(s)
        if t in ("true", "false"):
            return t == "true"
        if t in ("null", "undefined"):
            return None
        if t == "identifier":
            name = text(node)
            if name == "Infinity":
                return math.inf
            if name == "undefined":
                return None
            if name in self.consts:
                return self.value(self.consts[name], depth + 1)
            return Unresolved(name)
        if t == "member_expression":
            key = text(node)
            if key == "Number.POSITIVE_INFINITY":
                return math.inf
            if key in self.consts:
                return self.value(self.consts[key], depth + 1)
            return Unresolved(key)
        if t == "binary_expression":
            op = node.child_by_field_name("operator")
            a, b = self.value(node.child_by_field_name("left"), depth + 1), self.value(node.child_by_field_name("right"), depth + 1)
            if op is not None and text(op) == "+" and isinstance(a, str) and isinstance(b, str) \
                    and not isinstance(a, Unresolved) and not isinstance(b, Unresolved):
                return a + b
            if op is not None and text(op) in ("*", "+") and isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                    and not isinstance(a, bool) and not isinstance(b, bool):
                return a * b if text(op) == "*" else a + b
            return Unresolved(text(node))
        if t == "object":
            out: dict = {}
            for c in node.named_children:
                if c.type == "pair":
                    k = c.child_by_field_name("key")
                    key = _string(k) if k.type == "string" else text(k)
                    out[key] = self.value(c.child_by_field_name("value"), depth + 1)
                elif c.type == "shorthand_property_identifier":
                    out[text(c)] = self.value(c, depth + 1) if text(c) in self.consts else Unresolved(text(c))
                elif c.type == "spread_element" and c.named_children:
                    v = self.value(c.named_children[0], depth + 1)
                    if isinstance(v, dict):
                        out.update(v)
                    else:
                        out.setdefault("...", []).append(text(c.named_children[0]))
            return out
        if t == "array":
            return [self.value(c, depth + 1) for c in node.named_children]
        if t == "unary_expression" and text(node).startswith("-"):
            v = self.value(node.named_children[0], depth + 1) if node.named_children else None
            return -v if isinstance(v, (int, float)) and not isinstance(v, bool) else Unresolved(text(node))
        return Unresolved(text(node))

    # -- sites -----------------------------------------------------------------------------
    def _site(self, node, kind: str, **kw) -> Site:
        row, col = node.start_point[0], node.start_point[1]
        line = self.lines[row].strip() if row < len(self.lines) else ""
        return Site(self.path, row + 1, col + 1, kind, snippet=line[:200], **kw)

    def _sites(self, root, _) -> None:
        stack = [(root, None)]
        while stack:
            n, klass = stack.pop()
            t = n.type
            if t == "class_declaration":
                klass = n
                self._nest_class(n)
            elif t == "new_expression":
                self._new(n)
            elif t == "call_expression":
                self._call(n)
            elif t == "string" and n.parent is not None and n.parent.type in ("arguments", "binary_expression"):
                v = _string(n) or ""
                if v.startswith("/") and any(k in v.lower() for k in HEALTH_ROUTES):
                    self.sites.append(self._site(n, "health", event=v))
            stack.extend((c, klass) for c in reversed(n.named_children))

    def _library(self, name: str) -> tuple[str | None, str | None]:
        if name in self.classes:
            lib, cls = self.classes[name]
            return lib, (cls if cls != "default" else name)
        return (None, name) if name in CLASSES else (None, None)

    def _new(self, n) -> None:
        ctor = n.child_by_field_name("constructor")
        if ctor is None:
            return
        cname = text(ctor).split(".")[-1] if ctor.type == "member_expression" else text(ctor)
        lib, cls = self._library(text(ctor) if ctor.type == "identifier" else cname)
        if cls is None or cls not in CLASSES:
            return
        args = [a for a in (n.child_by_field_name("arguments").named_children if n.child_by_field_name("arguments")
                            else []) if a.type != "comment"]
        site = self._site(n, cls, library=lib, receiver=_binding(n))
        if cls == "FlowProducer":
            site.options = self._obj(args[0]) if args else {}
        else:
            site.queue = self.value(args[0]) if args else None
            rest = args[1:]
            if cls == "Worker" and rest:
                site.processor = self._function(rest[0])
                rest = rest[1:]
            if lib == "bull" and rest and rest[0].type != "object":   # new Bull(name, url, opts)
                rest = rest[1:]
            site.options = self._obj(rest[0]) if rest else {}
        self.sites.append(site)

    def _obj(self, node) -> dict:
        v = self.value(node)
        return v if isinstance(v, dict) else {}

    def _function(self, node):
        if node is None:
            return None
        if node.type in ("arrow_function", "function_expression", "function", "function_declaration"):
            return node
        if node.type == "identifier" and text(node) in self.functions:
            return self.functions[text(node)]
        return None

    def _call(self, n) -> None:
        fn = n.child_by_field_name("function")
        args_node = n.child_by_field_name("arguments")
        args = [a for a in (args_node.named_children if args_node is not None else []) if a.type != "comment"]
        if fn is None or fn.type != "member_expression":
            return
        obj, prop = fn.child_by_field_name("object"), text(fn.child_by_field_name("property"))
        recv = _receiver(obj)
        if recv == "process" and prop in ("on", "once") and args and self.value(args[0]) in ("SIGTERM", "SIGINT"):
            s = self._site(n, "signal", receiver="process", event=self.value(args[0]))
            s.processor = self._function(args[1]) if len(args) > 1 else None
            self.signals.append(s)
            return
        if recv == "process" and prop == "memoryUsage":
            self.sites.append(self._site(n, "memoryUsage", receiver="process"))
            return
        if prop == "isRunning":
            self.sites.append(self._site(n, "health", receiver=recv, event="isRunning()"))
            return
        if prop in ("on", "once") and recv in self.loops and args:
            # `for (const w of workers) w.on('failed', ...)`: a handler on each Worker of the array
            arr = self.consts.get(self.loops[recv])
            ev = self.value(args[0])
            if arr is not None and arr.type == "array" and isinstance(ev, str) and ev in EVENTS:
                for el in arr.named_children:
                    if el.type == "new_expression" and el.child_by_field_name("arguments") is not None:
                        a = el.child_by_field_name("arguments").named_children
                        if a and text(el.child_by_field_name("constructor")).split(".")[-1] in CLASSES:
                            self.sites.append(self._site(n, "on", receiver=recv, event=ev, queue=self.value(a[0])))
                return
        if text(obj) == "BullModule" and prop in ("registerQueue", "registerQueueAsync"):
            for a in args:
                o = self._obj(a)
                self.sites.append(self._site(n, "Queue", library=None, queue=o.get("name"), options=o,
                                             receiver=f"@InjectQueue:{o.get('name')}"))
            return
        if prop not in METHODS or recv is None:
            return
        if prop in ("add",):
            # add(name, data, opts) (BullMQ, Bull named jobs) or add(data, opts) (Bull)
            first = self.value(args[0]) if args else None
            name_first = len(args) >= 3 or (isinstance(first, str) and not isinstance(first, Unresolved)) \
                or (args and args[0].type in ("string", "template_string"))
            data = args[1] if name_first and len(args) > 1 else (args[0] if args and not name_first else None)
            opts = args[2] if name_first and len(args) > 2 else (args[1] if not name_first and len(args) > 1 else None)
            s = self._site(n, "add", receiver=recv, options=self._obj(opts) if opts is not None else {},
                           data=self.value(data) if data is not None else None, data_text=text(data))
            self.sites.append(s)
        elif prop == "addBulk":
            self.sites.append(self._site(n, "addBulk", receiver=recv, data_text=text(args[0]) if args else ""))
        elif prop == "process":
            conc = self.value(args[0]) if args and args[0].type in ("number", "identifier", "member_expression") \
                and not self._function(args[0]) else None
            fn_node = next((self._function(a) for a in args if self._function(a) is not None), None)
            s = self._site(n, "process", receiver=recv, processor=fn_node,
                           options={"concurrency": conc} if conc is not None else {})
            self.sites.append(s)
        elif prop == "upsertJobScheduler":
            s = self._site(n, "upsertJobScheduler", receiver=recv,
                           options={"repeat": self._obj(args[1]) if len(args) > 1 else {},
                                    "template": self._obj(args[2]) if len(args) > 2 else {}},
                           queue=None, data=self.value(args[0]) if args else None)
            self.sites.append(s)
        elif prop in ("on", "once"):
            ev = self.value(args[0]) if args else None
            if isinstance(ev, str) and not isinstance(ev, Unresolved) and ev in EVENTS:
                self.sites.append(self._site(n, "on", receiver=recv, event=ev))
        else:
            self.sites.append(self._site(n, prop, receiver=recv))

    def _nest_class(self, cls) -> None:
        """NestJS: @Processor('queue') classes (their process / @Process() methods), @InjectQueue
        parameters, @OnWorkerEvent / @OnQueueFailed handlers."""
        decorators = [d for d in cls.children if d.type == "decorator"]
        parent = cls.parent
        if parent is not None and parent.type == "export_statement":
            decorators += [d for d in parent.children if d.type == "decorator"]
        queue = None
        for d in decorators:
            call = d.named_children[0] if d.named_children else None
            if call is not None and call.type == "call_expression" and text(call.child_by_field_name("function")) == "Processor":
                a = call.child_by_field_name("arguments").named_children
                if a:
                    v = self.value(a[0])
                    queue = v.get("name") if isinstance(v, dict) else v
                site = self._site(cls, "Worker", library=None, queue=queue, receiver=f"@Processor:{queue}")
                body = cls.child_by_field_name("body")
                for m in (body.named_children if body is not None else []):
                    if m.type == "method_definition":
                        mdec = [x for x in m.children if x.type == "decorator"] + _preceding_decorators(m)
                        names = [text(x.named_children[0]).split("(")[0] for x in mdec if x.named_children]
                        if text(m.child_by_field_name("name")) == "process" or "Process" in names:
                            site.processor = m
                        for x in mdec:
                            dt = text(x.named_children[0]) if x.named_children else ""
                            if dt.startswith(("OnWorkerEvent", "OnQueueEvent", "OnQueueFailed", "OnQueueError",
                                              "OnQueueStalled", "OnGlobalQueueFailed")):
                                ev = "failed" if "Failed" in dt or "'failed'" in dt or '"failed"' in dt else \
                                    "stalled" if "Stalled" in dt or "stalled" in dt else \
                                    "error" if "Error" in dt or "'error'" in dt else dt
                                self.sites.append(self._site(x, "on", receiver=f"@Processor:{queue}", event=ev))
                self.sites.append(site)
        for p in _walk(cls):
            if p.type == "decorator" and text(p).startswith("@InjectQueue"):
                call = p.named_children[0]
                a = call.child_by_field_name("arguments").named_children if call.type == "call_expression" else []
                target = p.parent
                name = target.child_by_field_name("pattern") or target.child_by_field_name("name") \
                    if target is not None else None
                if a and name is not None:
                    self.sites.append(self._site(p, "InjectQueue", queue=self.value(a[0]),
                                                 receiver=text(name).split(".")[-1]))


def _preceding_decorators(m) -> list:
    out, sib = [], m.prev_named_sibling
    while sib is not None and sib.type == "decorator":
        out.append(sib)
        sib = sib.prev_named_sibling
    return out


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.named_children))


def _require(node) -> str | None:
    """'bull' for require('bull') (also `await import('bull')`), else None."""
    while node is not None and node.type in ("await_expression", "parenthesized_expression"):
        node = node.named_children[0] if node.named_children else None
    if node is not None and node.type == "call_expression":
        fn = node.child_by_field_name("function")
        args = node.child_by_field_name("arguments")
        if fn is not None and text(fn) in ("require", "import") and args is not None and args.named_children:
            return _string(args.named_children[0])
    return None


def _receiver(obj) -> str | None:
    """The binding a method is called on: `queue`, `this.queue` -> 'queue'."""
    if obj is None:
        return None
    if obj.type == "identifier":
        return text(obj)
    if obj.type == "member_expression":
        return text(obj.child_by_field_name("property"))
    if obj.type in ("await_expression", "parenthesized_expression") and obj.named_children:
        return _receiver(obj.named_children[-1])
    return None


def _binding(n) -> str | None:
    """The name a `new X(...)` is bound to (const x = ..., this.x = ..., a class field)."""
    p = n.parent
    while p is not None and p.type in ("await_expression", "parenthesized_expression", "as_expression"):
        p = p.parent
    if p is None:
        return None
    if p.type == "variable_declarator":
        name = p.child_by_field_name("name")
        return text(name) if name is not None and name.type == "identifier" else None
    if p.type == "assignment_expression":
        left = p.child_by_field_name("left")
        return _receiver(left)
    if p.type in ("public_field_definition", "field_definition"):
        name = p.child_by_field_name("name") or p.child_by_field_name("property")
        return text(name) if name is not None else None
    return None
