"""`use module … alias … with`, `configure using`, `provides`, and module code's context."""

from __future__ import annotations

import pytest
from krl_fakes import FakeContext, send_event

import krl

DEFINED = """
ruleset io.picolabs.module-defined {
    meta {
        provides getInfo, getName, getInfoAction
        shares getInfo
        configure using
            configured_name = "Bob"
    }
    global {
        privateFn = function(){
            "privateFn = name: " + configured_name + " memo: " + ent:memo;
        }
        getName = function(){
            configured_name;
        }
        getInfo = function(){
            {
                "name": getName(),
                "memo": ent:memo,
                "privateFn": privateFn()
            };
        }
        getInfoAction = defaction(){
            send_directive("getInfoAction", getInfo());
            return {"name": getInfo()["name"]}
        }
    }
    rule store_memo {
        select when module_defined store_memo memo re#^(.*)$# setting(text)
        send_directive("store_memo", {"name": configured_name, "memo_to_store": text});
        always {
            ent:memo := "[\\"" + text + "\\" by " + configured_name + "]"
        }
    }
}
"""

USED = """
ruleset io.picolabs.module-used {
    meta {
        use module io.picolabs.module-defined
            alias my_module_dflt

        use module io.picolabs.module-defined
            alias my_module_conf
            with
                configured_name = "Jim"

        shares getEntVal, dfltName
    }
    global {
        getEntVal = function(){
            ent:val;
        }
        dfltName = my_module_dflt:getName()
    }
    rule dflt_name {
        select when module_used dflt_name
        send_directive("dflt_name", {"name": my_module_dflt:getName()});
    }
    rule conf_name {
        select when module_used conf_name
        send_directive("conf_name", {"name": my_module_conf:getName()});
    }
    rule dflt_info {
        select when module_used dflt_info
        send_directive("dflt_info", {"info": my_module_dflt:getInfo()});
    }
    rule conf_info {
        select when module_used conf_info
        send_directive("conf_info", {"info": my_module_conf:getInfo()});
    }
    rule dflt_getInfoAction {
        select when module_used dflt_getInfoAction
        my_module_dflt:getInfoAction() setting(info);
        always {
            ent:val := info
        }
    }
    rule conf_getInfoAction {
        select when module_used conf_getInfoAction
        my_module_conf:getInfoAction() setting(info);
        always {
            ent:val := info
        }
    }
}
"""


def _pico(*sources: str) -> tuple[FakeContext, list[krl.Ruleset]]:
    ctx = FakeContext()
    rulesets = [krl.compile_ruleset(src) for src in sources]
    for rs in rulesets:
        ctx.modules[rs.rid] = rs
    return ctx, rulesets


def test_module_defined_and_used_like_the_reference() -> None:
    ctx, (defined, used) = _pico(DEFINED, USED)
    assert send_event(used, ctx, "module_used", "dflt_name") == [("dflt_name", {"name": "Bob"})]
    assert send_event(used, ctx, "module_used", "conf_name") == [("conf_name", {"name": "Jim"})]

    # The module reads its own entity variables, written by its own rule.
    send_event(defined, ctx, "module_defined", "store_memo", {"memo": "foo"})
    assert ctx.ents[("io.picolabs.module-defined", "memo")] == '["foo" by Bob]'
    info = {
        "name": "Bob",
        "memo": '["foo" by Bob]',
        "privateFn": 'privateFn = name: Bob memo: ["foo" by Bob]',
    }
    assert send_event(used, ctx, "module_used", "dflt_info") == [("dflt_info", {"info": info})]
    conf = {
        "name": "Jim",
        "memo": '["foo" by Bob]',
        "privateFn": 'privateFn = name: Jim memo: ["foo" by Bob]',
    }
    assert send_event(used, ctx, "module_used", "conf_info") == [("conf_info", {"info": conf})]

    # A module defaction: its directive goes to the user, its result is bound by setting.
    assert send_event(used, ctx, "module_used", "conf_getInfoAction") == [("getInfoAction", conf)]
    assert ctx.ents[("io.picolabs.module-used", "val")] == {"name": "Jim"}
    assert used.query("getEntVal", {}, ctx, krl.Budget()) == {"name": "Jim"}

    # A module used in `global`.
    assert used.query("dfltName", {}, ctx, krl.Budget()) == "Bob"


def test_module_not_installed() -> None:
    ctx, (used,) = _pico(USED)
    with pytest.raises(krl.KrlRuntimeError) as info:
        send_event(used, ctx, "module_used", "conf_name")
    assert "Module not found: io.picolabs.module-defined" in str(info.value)
    assert "rule conf_name" in str(info.value)


def test_only_provided_names_are_reachable() -> None:
    user = """ruleset u { meta { use module io.picolabs.module-defined alias m shares x }
        global { x = function() { m:privateFn() } } }"""
    ctx, (_, used) = _pico(DEFINED, user)
    with pytest.raises(krl.KrlRuntimeError) as info:
        used.query("x", {}, ctx, krl.Budget())
    message = str(info.value)
    assert "module io.picolabs.module-defined (alias m) does not provide 'privateFn'" in message
    assert "(in u, query x, line 2" in message


def test_resolution_once_per_transaction() -> None:
    ctx, (_, used) = _pico(DEFINED, USED)
    send_event(used, ctx, "module_used", "dflt_name")
    send_event(used, ctx, "module_used", "dflt_name")
    assert ctx.module_lookups == ["io.picolabs.module-defined"]
    other = FakeContext()
    other.modules = ctx.modules
    send_event(used, other, "module_used", "dflt_name")
    assert other.module_lookups == ["io.picolabs.module-defined"]


def test_alias_defaults_to_rid_and_method_sugar_and_values() -> None:
    lib = """ruleset lib { meta { provides double, k configure using factor = 2 }
        global { double = function(x) { x * factor }; k = 7 } }"""
    user = """ruleset u { meta { use module lib with factor = 10 shares a, b, c, d }
        global {
            a = function() { lib:double(3) }
            b = function() { 4.lib:double() }
            c = function() { [1, 2].map(lib:double) }
            d = function() { lib:k + typeof(lib:double) }
        } }"""
    ctx, (_, used) = _pico(lib, user)
    budget = krl.Budget()
    assert used.query("a", {}, ctx, budget) == 30
    assert used.query("b", {}, ctx, budget) == 40
    assert used.query("c", {}, ctx, budget) == [10, 20]
    assert used.query("d", {}, ctx, budget) == "7Function"


def test_with_and_defaults_see_earlier_configuration() -> None:
    lib = """ruleset lib { meta { provides greet
            configure using who = "world"; greeting = "hello " + who }
        global { greet = function() { greeting } } }"""
    user = """ruleset u { meta {
            configure using name = "Ann"
            use module lib alias l with who = name
            use module lib alias l2 with greeting = "hi " + name
            shares a }
        global { a = function() { [l:greet(), l2:greet()] } } }"""
    ctx, (_, used) = _pico(lib, user)
    assert used.query("a", {}, ctx, krl.Budget()) == ["hello Ann", "hi Ann"]


def test_module_code_has_no_event_and_its_own_meta() -> None:
    lib = """ruleset lib { meta { provides info, act }
        global {
            info = function() { [event:attrs, meta:rid, meta:ruleName, meta:inQuery] }
            act = defaction() { send_directive("from-lib") setting(d) return d{"meta"} }
        } }"""
    user = """ruleset u { meta { use module lib alias l }
        rule r { select when a b
            every { send_directive("info", {"info": l:info()}); l:act() setting(m) }
            fired { ent:m := m } } }"""
    ctx, (_, used) = _pico(lib, user)
    directives = send_event(used, ctx, "a", "b", {"x": 1})
    assert directives == [("info", {"info": [None, "lib", None, False]}), ("from-lib", {})]
    assert ctx.ents[("u", "m")] == {"rid": "u", "rule_name": "r", "txnId": "none"}


def test_dependency_cycle() -> None:
    a = """ruleset a { meta { use module b provides f shares q }
        global { f = function() { 1 }; q = function() { b:g() } } }"""
    b = """ruleset b { meta { use module a provides g }
        global { g = function() { a:f() } } }"""
    ctx, (ra, _) = _pico(a, b)
    with pytest.raises(krl.KrlRuntimeError) as info:
        ra.query("q", {}, ctx, krl.Budget())
    assert "Dependency cycle: a -> b -> a" in str(info.value)


def test_self_use_is_a_cycle() -> None:
    a = """ruleset a { meta { use module a alias me provides f shares q }
        global { f = function() { 1 }; q = function() { me:f() } } }"""
    ctx, (ra,) = _pico(a)
    with pytest.raises(krl.KrlRuntimeError, match="Dependency cycle: a -> a"):
        ra.query("q", {}, ctx, krl.Budget())


def test_errors_in_module_code_point_at_the_module() -> None:
    lib = """ruleset lib { meta { provides f }
        global {
            f = function(x) { x - "a" }
        } }"""
    user = """ruleset u { meta { use module lib alias l shares q }
        global { q = function() { l:f(1) } } }"""
    ctx, (_, used) = _pico(lib, user)
    with pytest.raises(krl.KrlRuntimeError) as info:
        used.query("q", {}, ctx, krl.Budget())
    err = info.value
    assert (err.rid, err.line) == ("lib", 3)
    assert err.rule == "used by u query q"


def test_module_action_misuse() -> None:
    lib = """ruleset lib { meta { provides f, act }
        global { f = function() { 1 }; act = defaction() { noop() } } }"""
    user = """ruleset u { meta { use module lib alias l shares q }
        global { q = function() { l:act() } }
        rule r { select when a b l:f() } }"""
    ctx, (_, used) = _pico(lib, user)
    with pytest.raises(krl.KrlRuntimeError, match="'act' is an action"):
        used.query("q", {}, ctx, krl.Budget())
    with pytest.raises(krl.KrlRuntimeError, match="'l:f' is not an action"):
        send_event(used, ctx, "a", "b")


def test_nested_modules_use_their_own_configuration() -> None:
    c = """ruleset c { meta { provides v configure using n = 0 } global { v = function() { n } } }"""
    b = """ruleset b { meta { provides w configure using n = 1 use module c with n = n + 100 }
        global { w = function() { [n, c:v()] } } }"""
    a = """ruleset a { meta { use module b with n = 5 use module c shares q }
        global { q = function() { [b:w(), c:v()] } } }"""
    ctx, (_, _, ra) = _pico(c, b, a)
    assert ra.query("q", {}, ctx, krl.Budget()) == [[5, 105], 0]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "ruleset a { meta { configure using x = 1 } global { x = 2 } }",
            "'x' is already declared in configure using",
        ),
        (
            "ruleset a { meta { use module b alias ent } }",
            "'ent' cannot be a module alias",
        ),
        (
            "ruleset a { meta { use module b with x = 1 and x = 2 } }",
            "'x' is given twice in with",
        ),
        (
            "ruleset a { meta { use module b with x = y } global { y = 1 } }",
            "undefined name 'y'",
        ),
        (
            "ruleset a { global { x = nomod:f() } }",
            "unknown module 'nomod' (no 'use module … alias nomod')",
        ),
    ],
)
def test_module_compile_errors(source: str, message: str) -> None:
    with pytest.raises(krl.KrlCompileError) as info:
        krl.compile_ruleset(source)
    assert info.value.message == message
