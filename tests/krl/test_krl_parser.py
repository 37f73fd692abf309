from __future__ import annotations

import pytest

from krl import (
    KrlCompileError,
    KrlSyntaxError,
    ast,
    compile_ruleset,
    parse_expression,
    parse_ruleset,
)


def show(node: object) -> str:
    """A compact s-expression of an expression tree, for precedence tests."""
    match node:
        case ast.Number(value=v) | ast.Boolean(value=v):
            return str(v)
        case ast.Null():
            return "null"
        case ast.String(value=v):
            return repr(v)
        case ast.Identifier(name=n):
            return n
        case ast.DomainIdentifier(domain=d, name=n):
            return f"{d}:{n}"
        case ast.Unary(op=op, operand=x):
            return f"({op} {show(x)})"
        case ast.Binary(op=op, left=a, right=b):
            return f"({op} {show(a)} {show(b)})"
        case ast.Conditional(test=t, then=a, otherwise=b):
            return f"(=> {show(t)} {show(a)} {show(b)})"
        case ast.Call(callee=c, args=args):
            return f"(call {show(c)}{''.join(' ' + show(a) for a in args)})"
        case ast.DotCall(receiver=r, name=n, args=args):
            return f"(.{show(n)} {show(r)}{''.join(' ' + show(a) for a in args)})"
        case ast.Arg(name=None, value=v):
            return show(v)
        case ast.Arg(name=n, value=v):
            return f"{n}={show(v)}"
        case ast.Path(target=t, key=k):
            return f"(path {show(t)} {show(k)})"
        case ast.Index(target=t, key=k):
            return f"(index {show(t)} {show(k)})"
        case ast.DotAccess(target=t, name=n):
            return f"(dot {show(t)} {n.name})"
        case ast.Array(items=items):
            return "[" + " ".join(show(i) for i in items) + "]"
        case ast.Map(entries=entries):
            return "{" + " ".join(f"{show(k)}:{show(v)}" for k, v in entries) + "}"
        case ast.Chevron(parts=parts):
            return "<<" + " ".join(show(p) for p in parts) + ">>"
        case ast.RegExp(pattern=p, flags=f):
            return f"re#{p}#{f}"
        case ast.Function(params=ps, body=body, result=r):
            params = ",".join(p.name + ("=" + show(p.default) if p.default else "") for p in ps)
            decls = "".join(f"{d.name.name}={show(d.value)}; " for d in body)
            return f"(fn ({params}) {decls}{show(r)})"
    raise AssertionError(node)


@pytest.mark.parametrize(
    ("source", "tree"),
    [
        ("1 + 2 * 3", "(+ 1 (* 2 3))"),
        ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
        ("1 - 2 - 3", "(- (- 1 2) 3)"),
        ("a || b && c", "(|| a (&& b c))"),
        ("not a == b", "(== (not a) b)"),
        ("-3.abs()", "(- (.abs 3))"),
        ("a < b == c >= d", "(>= (== (< a b) c) d)"),
        ("x like re#a#i", "(like x re#a#i)"),
        ("a cmp b <=> c", "(<=> (cmp a b) c)"),
        ("[1] >< 1", "(>< [1] 1)"),
        ("a => 1 | b => 2 | 3", "(=> a 1 (=> b 2 3))"),
        ("a + 1 => b | c", "(=> (+ a 1) b c)"),
        ("f(1, b = 2)", "(call f 1 b=2)"),
        ('x.defaultsTo(0).as("Number")', "(.as (.defaultsTo x 0) 'Number')"),
        ('m{"k"}{["a", 0]}', "(path (path m 'k') ['a' 0])"),
        ('a[0]["k"]', "(index (index a 0) 'k')"),
        ("m.k", "(dot m k)"),
        ("ent:count.defaultsTo(0) + 1", "(+ (.defaultsTo ent:count 0) 1)"),
        ('event:attr("x")', "(call event:attr 'x')"),
        ("meta:rid", "meta:rid"),
        ("[1, 2,]", "[1 2]"),
        ('{"a": 1, "b": [null],}', "{'a':1 'b':[null]}"),
        ("{}", "{}"),
        ("<<a #{b + 1} c>>", "<<'a ' (+ b 1) ' c'>>"),
        ("<<>>", "<<>>"),
        ("true && false", "(&& True False)"),
        ("function(a, b = a + 1){ c = a; c * b }", "(fn (a,b=(+ a 1)) c=a; (* c b))"),
        ("function(){ return 1; }", "(fn () 1)"),
        ("+x", "(+ x)"),
        ("f(1)(2)", "(call (call f 1) 2)"),
        ('x.klog("msg")', "(.klog x 'msg')"),
    ],
)
def test_expression_trees(source: str, tree: str) -> None:
    assert show(parse_expression(source)) == tree


def test_spans_cover_the_source() -> None:
    expr = parse_expression("  a + foo(1)")
    assert expr.span == ast.Span(2, 12)
    assert isinstance(expr, ast.Binary)
    assert expr.right.span == ast.Span(6, 12)


FULL = """
ruleset io.picolabs.did-o.test-1 {
  meta {
    name "Full"
    description <<
      Everything at once
    >>
    author "me"
    version "0.1"
    shares hello, count
    provides hello
  }
  global {
    count = 3;
    hello = function(name = "world") { <<Hello #{name}>> }
  }
  rule one {
    select when echo hello name re#^(.*)$# age re#(\\d+)# setting(n, a) where n != ""
    pre { x = n + a; y = x.length() }
    if y > 0 then send_directive("say", {"x": x}) setting(d)
    fired {
      ent:x := x;
      ent:m{["a", "b"]} := 1;
      clear ent:y;
      clear ent:m{"a"};
      raise echo event "again" attributes {"n": n};
      raise echo event "other";
      raise event "a:b" for "io.x" attributes {};
      log info "fired " + x;
      z = 1;
      last if z == 1;
      ent:done := true on final
    } else {
      noop_it = 1
    } finally {
      last
    }
  }
  rule two is inactive {
    select when a b or c:d and (e f before g h)
    noop()
  }
  rule three {
    select when any 2 (a b, c d, e f)
    every { send_directive("x") noop(); }
    always { ent:n := 0 }
  }
  rule four {
    select when a b
    notfired { ent:n := 1 } else { ent:n := 2 }
  }
}
"""


def test_full_ruleset() -> None:
    tree = parse_ruleset(FULL)
    assert tree.rid == "io.picolabs.did-o.test-1"
    keys = [p.key for p in tree.meta if isinstance(p, ast.MetaExpr | ast.MetaNames)]
    assert keys == ["name", "description", "author", "version", "shares", "provides"]
    shares = tree.meta[4]
    assert isinstance(shares, ast.MetaNames)
    assert [n.name for n in shares.names] == ["hello", "count"]
    assert [d.name.name for d in tree.global_decls] == ["count", "hello"]
    one, two, three, four = tree.rules
    assert isinstance(one.select, ast.EventPattern)
    assert (one.select.domain, one.select.type) == ("echo", "hello")
    assert [(a.name, a.regex.pattern) for a in one.select.attrs] == [
        ("name", "^(.*)$"),
        ("age", r"(\d+)"),
    ]
    assert [s.name for s in one.select.setting] == ["n", "a"]
    assert one.select.where is not None
    assert [d.name.name for d in one.pre] == ["x", "y"]
    block = one.action_block
    assert block is not None
    assert block.condition is not None
    assert block.actions[0].callee == ast.Identifier(block.actions[0].callee.span, "send_directive")
    assert [s.name for s in block.actions[0].setting] == ["d"]
    post = one.postlude
    assert post is not None
    assert post.fired is not None
    assert post.notfired is not None
    assert [type(s).__name__ for s in post.fired] == [
        "EntAssign", "EntAssign", "ClearEnt", "ClearEnt", "RaiseEvent", "RaiseEvent",
        "RaiseEvent", "LogStatement", "Declaration", "Guarded", "Guarded",
    ]  # fmt: skip
    path_assign = post.fired[1]
    assert isinstance(path_assign, ast.EntAssign)
    assert path_assign.path is not None
    dynamic = post.fired[6]
    assert isinstance(dynamic, ast.RaiseEvent)
    assert dynamic.domain is None
    assert dynamic.for_rid is not None
    assert dynamic.attributes is not None
    assert post.always is not None
    assert isinstance(post.always[0], ast.Last)
    assert not two.active
    assert isinstance(two.select, ast.EventOp)
    assert two.select.op == "or"
    right = two.select.args[1]
    assert isinstance(right, ast.EventOp)
    assert right.op == "and"
    assert isinstance(right.args[1], ast.EventOp)
    assert right.args[1].op == "before"
    assert isinstance(three.select, ast.EventOp)
    assert three.select.count == 2
    assert three.action_block is not None
    assert len(three.action_block.actions) == 2
    assert four.postlude is not None
    assert four.postlude.notfired is not None


def test_minimal_ruleset() -> None:
    tree = parse_ruleset("ruleset a {}")
    assert (tree.rid, tree.meta, tree.global_decls, tree.rules) == ("a", (), (), ())


def test_rule_without_action_or_postlude() -> None:
    rule = parse_ruleset("ruleset a { rule r { select when a b } }").rules[0]
    assert rule.action_block is None
    assert rule.postlude is None


def test_semicolon_separates_declaration_from_map() -> None:
    tree = parse_ruleset('ruleset a { global { one = 1; two = {"a": 1} } }')
    assert isinstance(tree.global_decls[1].value, ast.Map)


def test_use_module_and_configure_parse() -> None:
    tree = parse_ruleset(
        "ruleset a { meta { use module io.picolabs.wrangler alias w with x = 1 and y = 2 "
        'configure using z = "q" logging on } }'
    )
    use, conf, log = tree.meta
    assert isinstance(use, ast.UseModule)
    assert use.rid == "io.picolabs.wrangler"
    assert use.alias is not None
    assert use.alias.name == "w"
    assert [d.name.name for d in use.with_] == ["x", "y"]
    assert isinstance(conf, ast.Configure)
    assert conf.declarations[0].name.name == "z"
    assert isinstance(log, ast.MetaExpr)
    assert log.key == "logging"


def test_event_group_function_form() -> None:
    rule = parse_ruleset("ruleset a { rule r { select when or(a b, c d) } }").rules[0]
    assert isinstance(rule.select, ast.EventOp)
    assert rule.select.op == "or"
    assert len(rule.select.args) == 2


def test_counted_event_groups_aggregators_and_within() -> None:
    rule = parse_ruleset(
        "ruleset a { rule r { select when repeat 3 (a b x re#(\\d+)#) push(m, n)"
        " within 1 + 2 minutes } }"
    ).rules[0]
    assert isinstance(rule.select, ast.EventOp)
    assert (rule.select.op, rule.select.count) == ("repeat", 3)
    assert rule.select.aggregator is not None
    assert rule.select.aggregator.op == "push"
    assert [i.name for i in rule.select.aggregator.names] == ["m", "n"]
    assert rule.within is not None
    assert rule.within.unit == "minute"
    assert isinstance(rule.within.value, ast.Binary)
    plain = parse_ruleset("ruleset a { rule r { select when count inc } }").rules[0]
    assert isinstance(plain.select, ast.EventPattern)
    assert plain.select.domain == "count"


def test_within_needs_a_unit() -> None:
    with pytest.raises(KrlSyntaxError, match="expected a time unit"):
        parse_ruleset("ruleset a { rule r { select when a b before a c within 5 fortnights } }")


def test_defaction_error_and_schedule_statements() -> None:
    tree = parse_ruleset(
        "ruleset a { global { d = defaction(x, y = 1) { z = x; if z then every {"
        ' send_directive("d") setting(s) } returns s } }'
        " rule r { select when a b always {"
        ' error warn "oops"; schedule a event "c" at 5 attributes {} setting(id);'
        ' schedule event "a:c" repeat "* * * * *" } } }'
    )
    d = tree.global_decls[0].value
    assert isinstance(d, ast.DefAction)
    assert [p.name for p in d.params] == ["x", "y"]
    assert d.block is not None
    assert d.block.condition is not None
    assert isinstance(d.result, ast.Identifier)
    post = tree.rules[0].postlude
    assert post is not None
    assert post.always is not None
    err, at, cron = post.always
    assert isinstance(err, ast.ErrorStatement)
    assert err.level == "warn"
    assert isinstance(at, ast.ScheduleEvent)
    assert at.at is not None
    assert at.setting is not None
    assert at.setting.name == "id"
    assert isinstance(cron, ast.ScheduleEvent)
    assert cron.domain is None
    assert cron.repeat is not None


def test_choose_discriminant_may_use_paths() -> None:
    rule = parse_ruleset(
        'ruleset a { rule r { select when a b choose event:attrs{"k"} { x => noop() } } }'
    ).rules[0]
    block = rule.action_block
    assert block is not None
    assert isinstance(block.discriminant, ast.Path)
    assert block.actions[0].label == "x"


# -- found by scripts/krl_corpus/parity.py against krl-parser 1.3.0 ----------


def test_postlude_assignment_to_a_non_ent_domain_parses_and_fails_to_compile() -> None:
    # krl-parser accepts any `d:name := e` / `clear d:name` (Picolab/wrangler's
    # wrangler_common.krl has `app:prototypes{[...]} := ...`); its compiler refuses it.
    source = (
        "ruleset a { rule r { select when a b always {"
        ' app:p{["x"]} := 1; clear app:q; ent:n := 2 } } }'
    )
    post = parse_ruleset(source).rules[0].postlude
    assert post is not None
    assert post.always is not None
    assign, clear, ent = post.always
    assert isinstance(assign, ast.EntAssign)
    assert isinstance(clear, ast.ClearEnt)
    assert isinstance(ent, ast.EntAssign)
    assert (assign.domain, clear.domain, ent.domain) == ("app", "app", "ent")
    with pytest.raises(KrlCompileError, match="only ent: variables can be assigned or cleared"):
        compile_ruleset(source)
    with pytest.raises(KrlCompileError, match="found 'app:'"):
        compile_ruleset("ruleset a { rule r { select when a b always { clear app:q } } }")


def test_return_is_a_reserved_word() -> None:
    # As in krl-parser: `return = ...` in a function body is not a declaration.
    with pytest.raises(KrlSyntaxError):
        parse_ruleset("ruleset a { global { f = function() { return = 1; return } } }")
    with pytest.raises(KrlSyntaxError):
        parse_expression("return + 1")
    tree = parse_ruleset("ruleset a { global { f = function() { x = 1; return x } } }")
    f = tree.global_decls[0].value
    assert isinstance(f, ast.Function)
    assert isinstance(f.result, ast.Identifier)
