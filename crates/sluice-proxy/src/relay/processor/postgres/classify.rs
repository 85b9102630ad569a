//! SQL classification for the Postgres processor: the statement kinds and
//! every table a query string touches, with `sqlparser`'s PostgreSQL
//! dialect. Pure; the processor evaluates the result with
//! `sluice_policy::request::native::evaluate_sql`.
//!
//! What is decided here (documented in `docs/policy.md`, "Postgres endpoints"):
//! - One query string is a list of statements; each yields one or more
//!   [`Access`]es (kind + tables), and the string is allowed only if every
//!   access is. A statement nested in another (a data-modifying CTE,
//!   `EXPLAIN ANALYZE DELETE ...`, `PREPARE ... AS ...`) is an access of its
//!   own kind; its tables count for the enclosing statement too.
//! - Tables: every relation named in FROM, JOIN, subqueries, CTE bodies,
//!   INSERT/UPDATE/DELETE/MERGE targets, USING/FROM lists, COPY, DDL objects;
//!   views and table functions count under the name written. CTE names
//!   visible at the reference are not tables (but a DML target always is, as
//!   in PostgreSQL). Names are folded to lower case (quoted too) and
//!   qualified: `t` → `public.t` (sluice pins `search_path` to `public`),
//!   `pg_*` → both `pg_catalog.pg_*` and `public.pg_*` (the catalog is
//!   searched first), `db.s.t` → `s.t`.
//! - Kinds: SELECT/VALUES/TABLE and DECLARE CURSOR → select; INSERT and
//!   COPY FROM STDIN → insert; UPDATE → update; DELETE → delete; MERGE →
//!   insert + update + delete; COPY TO STDOUT → select; COPY to or from a
//!   file or program, SELECT INTO, CALL, LOCK, TRUNCATE, VACUUM/ANALYZE,
//!   every CREATE/ALTER/DROP/GRANT/REVOKE/COMMENT and every statement not
//!   listed here → ddl; SET/RESET/SHOW/DISCARD/LISTEN/NOTIFY/UNLISTEN/EXECUTE
//!   → other. Transaction control (BEGIN/START, COMMIT/END, ROLLBACK,
//!   SAVEPOINT, RELEASE, SET TRANSACTION) and cursor/prepared-statement
//!   housekeeping (FETCH, MOVE, CLOSE, DEALLOCATE) touch no table and need
//!   no rule.
//! - `search_path` changes (`SET search_path`, `SET SCHEMA`,
//!   `set_config('search_path', ...)`) are ddl: they would make the
//!   `public.` qualification wrong, so only a policy that grants ddl
//!   (which can rename any table anyway) may run them.
//! - Refused outright (no rule can allow them, audit mode included):
//!   unparseable text, settings that change how the text is lexed
//!   (`standard_conforming_strings` off, `backslash_quote`,
//!   `client_encoding`/`SET NAMES` to an encoding whose multibyte
//!   characters contain ASCII bytes), `set_config` with a name that is not
//!   a string literal, COPY with inline data.
//! - Functions that run SQL given as text or reach outside tables (files,
//!   other servers, other sessions: see [`SIDE_DOOR_FUNCTIONS`]) add a ddl
//!   access with no table; `set_config(name, ...)` adds an `other` access.

use std::ops::ControlFlow;

use sluice_policy::request::native::StatementKind;
use sqlparser::ast::{
    CopySource, CopyTarget, Expr, FromTable, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, ObjectType, Query, Select, Set, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Functions that execute SQL given as a string, or act outside the
/// tables a statement names: treated as a ddl access with no table.
pub(crate) const SIDE_DOOR_FUNCTIONS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_send_query",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
];

/// Settings whose change alters how statement text is lexed.
const LEXER_SETTINGS: &[&str] = &[
    "standard_conforming_strings",
    "backslash_quote",
    "client_encoding",
];

/// Client encodings whose characters never contain an ASCII byte (so
/// quotes, backslashes and semicolons mean the same to sluice and the
/// server). `SJIS`, `BIG5`, `GBK`, `UHC`, `GB18030` and `JOHAB` are not.
const SAFE_ENCODINGS: &[&str] = &[
    "utf8",
    "utf-8",
    "unicode",
    "sql_ascii",
    "latin1",
    "latin2",
    "latin3",
    "latin4",
    "latin5",
    "latin6",
    "latin7",
    "latin8",
    "latin9",
    "latin10",
    "win1250",
    "win1251",
    "win1252",
    "win1253",
    "win1254",
    "win1255",
    "win1256",
    "win1257",
    "win1258",
    "win866",
    "win874",
    "koi8r",
    "koi8u",
    "iso_8859_5",
    "iso_8859_6",
    "iso_8859_7",
    "iso_8859_8",
    "euc_jp",
    "euc_cn",
    "euc_kr",
    "euc_tw",
    "euc_jis_2004",
    "mule_internal",
];

/// Whether `name` (lower case) is a client encoding sluice lexes like the
/// server does.
pub(crate) fn safe_encoding(name: &str) -> bool {
    name == "default" || SAFE_ENCODINGS.contains(&name)
}

/// One access a statement makes: a kind and the tables (`schema.table`,
/// lower case, sorted, unique).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) kind: StatementKind,
    pub(crate) tables: Vec<String>,
    /// The tables could not all be listed (a DROP SCHEMA, a GRANT on every
    /// table of a schema, a function that reads files): a deny rule with a
    /// table glob for this kind must deny it.
    pub(crate) opaque: bool,
}

/// A query string, classified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Classified {
    /// Every access, in statement order; empty for an empty string or
    /// transaction control only.
    pub(crate) accesses: Vec<Access>,
    /// Refused whatever the policy says (see the module doc).
    pub(crate) refusal: Option<String>,
    /// A `COPY ... FROM STDIN` is among the statements (the client will
    /// send CopyData next).
    pub(crate) copy_in: bool,
    /// How many top-level statements the string holds.
    pub(crate) statements: usize,
}

/// Classifies `sql` (the text of a `Query` or `Parse` message).
pub(crate) fn classify(sql: &[u8]) -> Classified {
    let refuse = |why: String| Classified {
        refusal: Some(why),
        ..Classified::default()
    };
    let Ok(text) = std::str::from_utf8(sql) else {
        return refuse("statement text is not UTF-8".into());
    };
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, text) {
        Ok(s) => s,
        Err(e) => return refuse(format!("statement could not be parsed ({e})")),
    };
    let mut walker = Walker::default();
    for statement in &statements {
        walker.frames.clear();
        walker.open.clear();
        walker.pushed.clear();
        let _ = statement.visit(&mut walker);
        if walker.refusal.is_some() {
            break;
        }
    }
    let accesses = walker
        .accesses
        .into_iter()
        .filter(|a| !(a.free && a.tables.is_empty()))
        .map(|mut a| {
            a.tables.sort();
            a.tables.dedup();
            Access {
                opaque: a.opaque || (a.kind == StatementKind::Ddl && a.tables.is_empty()),
                kind: if a.free { StatementKind::Other } else { a.kind },
                tables: a.tables,
            }
        })
        .collect();
    Classified {
        accesses,
        refusal: walker.refusal,
        copy_in: walker.copy_in,
        statements: statements.len(),
    }
}

/// An access while the walk is open.
#[derive(Debug)]
struct Open {
    kind: StatementKind,
    tables: Vec<String>,
    opaque: bool,
    /// Transaction control and cursor housekeeping: dropped unless it
    /// named a table after all.
    free: bool,
}

/// The CTE names of one query level.
#[derive(Debug, Default)]
struct Frame {
    /// CTE names visible from enclosing levels.
    inherited: Vec<String>,
    own: Vec<String>,
    recursive: bool,
    /// Direct child queries entered so far: the first `own.len()` are the
    /// CTE bodies, in order (`Query` visits `with` before its body).
    children: usize,
}

impl Frame {
    fn visible(&self) -> impl Iterator<Item = &String> {
        self.inherited.iter().chain(self.own.iter())
    }
}

#[derive(Debug, Default)]
struct Walker {
    frames: Vec<Frame>,
    /// Indices into `accesses` of the statements being walked.
    open: Vec<usize>,
    accesses: Vec<Open>,
    refusal: Option<String>,
    copy_in: bool,
    /// Per open statement, how many accesses it pushed.
    pushed: Vec<usize>,
    /// Tables the statement being classified names outside relations the
    /// visitor reports (DML targets, COPY, DROP): recorded once its
    /// accesses are open, without CTE lookup.
    targets_later: Vec<ObjectName>,
    /// The statement being classified has objects that cannot be listed.
    opaque_next: bool,
}

/// How a statement maps to accesses.
enum Class {
    /// One access per kind (MERGE has three).
    Kinds(&'static [StatementKind]),
    /// A wrapper whose nested statement is the access (EXPLAIN, PREPARE).
    Wrapper,
    /// Needs no rule: transaction control, cursor housekeeping.
    Free,
}

const SELECT: &[StatementKind] = &[StatementKind::Select];
const INSERT: &[StatementKind] = &[StatementKind::Insert];
const UPDATE: &[StatementKind] = &[StatementKind::Update];
const DELETE: &[StatementKind] = &[StatementKind::Delete];
const MERGE: &[StatementKind] = &[
    StatementKind::Insert,
    StatementKind::Update,
    StatementKind::Delete,
];
const DDL: &[StatementKind] = &[StatementKind::Ddl];
const OTHER: &[StatementKind] = &[StatementKind::Other];

fn lower(ident: &Ident) -> String {
    ident.value.to_lowercase()
}

fn literal(expr: &Expr) -> Option<String> {
    let Expr::Value(v) = expr else {
        return None;
    };
    match &v.value {
        Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        Value::Number(n, _) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A setting value as text: literals and bare words (`SET x TO on`).
fn setting_value(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) => Some(lower(i)),
        other => literal(other).map(|s| s.to_lowercase()),
    }
}

/// Whether setting `name` to `values` keeps statement text lexing the same.
fn lexing_preserved(name: &str, values: &[Expr]) -> bool {
    let values: Option<Vec<String>> = values.iter().map(setting_value).collect();
    let Some(values) = values else {
        return false;
    };
    let [value] = values.as_slice() else {
        // `SET x TO DEFAULT` arrives as an identifier; several values: no.
        return false;
    };
    let value = value.trim();
    match name {
        "standard_conforming_strings" => matches!(value, "on" | "true" | "1" | "yes" | "default"),
        "client_encoding" => safe_encoding(value),
        _ => false,
    }
}

fn table_factor_name(tf: &TableFactor) -> Option<&ObjectName> {
    match tf {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

impl Walker {
    fn refuse(&mut self, why: impl Into<String>) -> ControlFlow<()> {
        if self.refusal.is_none() {
            self.refusal = Some(why.into());
        }
        ControlFlow::Break(())
    }

    /// `schema.table` spellings of `name`, or a refusal.
    fn qualify(&mut self, name: &ObjectName) -> Option<Vec<String>> {
        let mut parts = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            match part {
                ObjectNamePart::Identifier(i) => parts.push(lower(i)),
                ObjectNamePart::Function(_) => {
                    let _ = self.refuse("a computed object name");
                    return None;
                }
            }
        }
        match parts.as_slice() {
            [t] if t.starts_with("pg_") => {
                Some(vec![format!("pg_catalog.{t}"), format!("public.{t}")])
            }
            [t] => Some(vec![format!("public.{t}")]),
            [s, t] | [_, s, t] => Some(vec![format!("{s}.{t}")]),
            _ => {
                let _ = self.refuse("an object name with more than three parts");
                None
            }
        }
    }

    /// Records `name` as touched by every open access (no CTE lookup).
    fn record(&mut self, name: &ObjectName) {
        let Some(tables) = self.qualify(name) else {
            return;
        };
        if self.open.is_empty() {
            // Never lose a table: a relation outside any access is `other`.
            self.push(StatementKind::Other, false, false);
        }
        for &i in &self.open {
            self.accesses[i].tables.extend(tables.iter().cloned());
        }
    }

    fn push(&mut self, kind: StatementKind, opaque: bool, free: bool) -> usize {
        self.accesses.push(Open {
            kind,
            tables: Vec::new(),
            opaque,
            free,
        });
        let i = self.accesses.len() - 1;
        self.open.push(i);
        i
    }

    /// A separate access that does not stay open (a side-door function,
    /// `SELECT INTO`); it also counts the tables of the statements around it.
    fn side_access(&mut self, kind: StatementKind, tables: Vec<String>, opaque: bool) {
        self.accesses.push(Open {
            kind,
            tables,
            opaque,
            free: false,
        });
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [ObjectNamePart::Identifier(i)] = name.0.as_slice() else {
            return false;
        };
        let n = lower(i);
        self.frames
            .last()
            .is_some_and(|f| f.visible().any(|c| *c == n))
    }

    fn class(&mut self, s: &Statement) -> Class {
        match s {
            Statement::Query(_) | Statement::Declare { .. } => Class::Kinds(SELECT),
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    self.targets_later.push(n.clone());
                }
                Class::Kinds(INSERT)
            }
            Statement::Update(u) => {
                self.target_factor(&u.table);
                Class::Kinds(UPDATE)
            }
            Statement::Delete(d) => {
                let from = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                for t in from {
                    self.target_factor(t);
                }
                self.targets_later.extend(d.tables.iter().cloned());
                Class::Kinds(DELETE)
            }
            Statement::Merge(m) => {
                if let Some(n) = table_factor_name(&m.table) {
                    self.targets_later.push(n.clone());
                }
                Class::Kinds(MERGE)
            }
            Statement::Copy {
                source,
                to,
                target,
                payload,
                ..
            } => {
                if payload.is_some() {
                    let _ = self.refuse("COPY with inline data");
                }
                if let CopySource::Table { table_name, .. } = source {
                    self.targets_later.push(table_name.clone());
                }
                match (to, target) {
                    (false, CopyTarget::Stdin) => {
                        self.copy_in = true;
                        Class::Kinds(INSERT)
                    }
                    (true, CopyTarget::Stdout) => Class::Kinds(SELECT),
                    _ => Class::Kinds(DDL),
                }
            }
            Statement::Set(set) => self.class_set(set),
            Statement::StartTransaction {
                statements,
                exception,
                ..
            } if statements.is_empty() && exception.is_none() => Class::Free,
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Deallocate { .. } => Class::Free,
            Statement::Explain { .. } | Statement::Prepare { .. } => Class::Wrapper,
            Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::Discard { .. }
            | Statement::Reset(_)
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. }
            | Statement::Execute { .. } => Class::Kinds(OTHER),
            Statement::Call(f) => {
                self.targets_later.push(f.name.clone());
                Class::Kinds(DDL)
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                if matches!(
                    object_type,
                    ObjectType::Table
                        | ObjectType::View
                        | ObjectType::MaterializedView
                        | ObjectType::Index
                        | ObjectType::Sequence
                ) {
                    self.targets_later.extend(names.iter().cloned());
                } else {
                    self.opaque_next = true;
                }
                Class::Kinds(DDL)
            }
            _ => Class::Kinds(DDL),
        }
    }

    fn target_factor(&mut self, t: &TableWithJoins) {
        if let Some(n) = table_factor_name(&t.relation) {
            self.targets_later.push(n.clone());
        }
    }

    fn class_set(&mut self, set: &Set) -> Class {
        let assignments: Vec<(String, &[Expr])> = match set {
            Set::SingleAssignment {
                variable, values, ..
            } => vec![(object_text(variable), values.as_slice())],
            Set::ParenthesizedAssignments { variables, values } => variables
                .iter()
                .map(|v| (object_text(v), values.as_slice()))
                .collect(),
            Set::MultipleAssignments { assignments } => assignments
                .iter()
                .map(|a| (object_text(&a.name), std::slice::from_ref(&a.value)))
                .collect(),
            Set::SetNames { charset_name, .. } => {
                let value = lower(charset_name);
                if !safe_encoding(&value) {
                    let _ = self.refuse(format!("client encoding {value} is not supported"));
                }
                return Class::Kinds(OTHER);
            }
            Set::SetNamesDefault {} => return Class::Kinds(OTHER),
            Set::SetTransaction { .. } => return Class::Free,
            _ => return Class::Kinds(OTHER),
        };
        let mut ddl = false;
        for (name, values) in assignments {
            if name == "search_path" || name == "schema" {
                ddl = true;
            } else if LEXER_SETTINGS.contains(&name.as_str()) && !lexing_preserved(&name, values) {
                let _ = self.refuse(format!("changing {name} is not supported"));
            }
        }
        Class::Kinds(if ddl { DDL } else { OTHER })
    }

    fn check_function(&mut self, name: &ObjectName, args: &[&FunctionArg]) {
        let Some(ObjectNamePart::Identifier(last)) = name.0.last() else {
            return;
        };
        let f = lower(last);
        if f == "set_config" {
            let first = args.first().and_then(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => literal(e),
                _ => None,
            });
            match first.map(|n| n.trim().to_lowercase()) {
                None => {
                    let _ = self.refuse("set_config with a computed setting name");
                }
                Some(n) if n == "search_path" => {
                    self.side_access(StatementKind::Ddl, Vec::new(), true);
                }
                Some(n) if LEXER_SETTINGS.contains(&n.as_str()) => {
                    let _ = self.refuse(format!("changing {n} is not supported"));
                }
                Some(_) => self.side_access(StatementKind::Other, Vec::new(), false),
            }
        } else if SIDE_DOOR_FUNCTIONS.contains(&f.as_str()) {
            self.side_access(StatementKind::Ddl, Vec::new(), true);
        }
    }
}

impl Walker {
    /// `TABLE name` (a query body the visitor reports no relation for),
    /// anywhere in a set operation.
    fn table_commands(&mut self, body: &SetExpr) -> ControlFlow<()> {
        match body {
            SetExpr::Table(t) => {
                let Some(table) = &t.table_name else {
                    return self.refuse("TABLE without a name");
                };
                let mut parts: Vec<Ident> = t.schema_name.iter().cloned().collect();
                parts.push(table.clone());
                let name = ObjectName::from(parts);
                if !self.is_cte(&name) {
                    self.record(&name);
                }
                ControlFlow::Continue(())
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.table_commands(left)?;
                self.table_commands(right)
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn object_text(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => lower(i),
            ObjectNamePart::Function(_) => String::from("?"),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn function_args(f: &Function) -> Vec<&FunctionArg> {
    match &f.args {
        FunctionArguments::List(l) => l.args.iter().collect(),
        _ => Vec::new(),
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        self.targets_later.clear();
        self.opaque_next = false;
        match self.class(s) {
            Class::Kinds(kinds) => {
                let opaque = self.opaque_next;
                let depth = self.open.len();
                for &k in kinds {
                    self.push(k, opaque, false);
                }
                self.pushed.push(self.open.len() - depth);
            }
            Class::Wrapper => self.pushed.push(0),
            Class::Free => {
                self.push(StatementKind::Other, false, true);
                self.pushed.push(1);
            }
        }
        for n in std::mem::take(&mut self.targets_later) {
            self.record(&n);
        }
        if self.refusal.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _s: &Statement) -> ControlFlow<()> {
        let n = self.pushed.pop().unwrap_or(0);
        let keep = self.open.len().saturating_sub(n);
        self.open.truncate(keep);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let inherited = match self.frames.last_mut() {
            None => Vec::new(),
            Some(parent) => {
                let idx = parent.children;
                parent.children += 1;
                let own = if idx < parent.own.len() && !parent.recursive {
                    &parent.own[..idx]
                } else {
                    &parent.own[..]
                };
                parent.inherited.iter().chain(own).cloned().collect()
            }
        };
        let (own, recursive) = q.with.as_ref().map_or((Vec::new(), false), |w| {
            (
                w.cte_tables.iter().map(|c| lower(&c.alias.name)).collect(),
                w.recursive,
            )
        });
        self.frames.push(Frame {
            inherited,
            own,
            recursive,
            children: 0,
        });
        self.table_commands(&q.body)
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            let mut tables = Vec::new();
            for t in &into.targets {
                let name = match t {
                    Expr::Identifier(i) => ObjectName::from(vec![i.clone()]),
                    Expr::CompoundIdentifier(v) => ObjectName::from(v.clone()),
                    _ => return self.refuse("SELECT INTO a computed name"),
                };
                match self.qualify(&name) {
                    Some(q) => tables.extend(q),
                    None => return ControlFlow::Break(()),
                }
            }
            for &i in &self.open {
                self.accesses[i].tables.extend(tables.iter().cloned());
            }
            self.side_access(StatementKind::Ddl, tables, false);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if !self.is_cte(name) {
            self.record(name);
        }
        if self.refusal.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                let args: Vec<&FunctionArg> = args.args.iter().collect();
                self.check_function(name, &args);
            }
            TableFactor::Function { name, args, .. } => {
                let args: Vec<&FunctionArg> = args.iter().collect();
                self.check_function(name, &args);
                self.record(name);
            }
            _ => {}
        }
        if self.refusal.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            let args = function_args(f);
            self.check_function(&f.name, &args);
        }
        if self.refusal.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
