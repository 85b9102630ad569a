//! Parse a GraphQL document and classify the operation a request selects.

use std::collections::{HashMap, HashSet};

use apollo_parser::cst;
use apollo_parser::Parser;

use super::{ClassifiedOperation, GraphqlError, OperationType};

/// Largest document classified, whatever the caller's cap.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Parser nesting limit (selection sets, lists, objects...).
pub const MAX_PARSE_DEPTH: usize = 256;
/// Parser token limit.
pub const MAX_TOKENS: usize = 1 << 20;
/// Deepest chain of fragment spreads / inline fragments followed at the root.
pub const MAX_FRAGMENT_DEPTH: usize = 32;
/// Most fragment spreads and inline fragments expanded at the root.
pub const MAX_FRAGMENT_EXPANSIONS: usize = 512;
/// Most root field selections counted (before deduplication).
pub const MAX_ROOT_FIELDS: usize = 1024;

fn name_text(n: Option<cst::Name>) -> Option<String> {
    Some(n?.ident_token()?.text().to_string())
}

fn op_type(op: &cst::OperationDefinition) -> Result<OperationType, GraphqlError> {
    let Some(t) = op.operation_type() else {
        return Ok(OperationType::Query); // `{ ... }` shorthand
    };
    if t.query_token().is_some() {
        Ok(OperationType::Query)
    } else if t.mutation_token().is_some() {
        Ok(OperationType::Mutation)
    } else if t.subscription_token().is_some() {
        Ok(OperationType::Subscription)
    } else {
        Err(GraphqlError::Syntax)
    }
}

/// See [`super::classify`].
pub(super) fn classify(
    document: &str,
    operation_name: Option<&str>,
) -> Result<ClassifiedOperation, GraphqlError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(GraphqlError::DocumentTooLarge);
    }
    let tree = Parser::new(document)
        .recursion_limit(MAX_PARSE_DEPTH)
        .token_limit(MAX_TOKENS)
        .parse();
    if tree.errors().next().is_some() {
        return Err(GraphqlError::Syntax);
    }
    let doc = tree.document();

    let mut ops: Vec<(Option<String>, cst::OperationDefinition)> = Vec::new();
    let mut fragments: HashMap<String, cst::SelectionSet> = HashMap::new();
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => {
                ops.push((name_text(op.name()), op));
            }
            cst::Definition::FragmentDefinition(f) => {
                let name = f
                    .fragment_name()
                    .and_then(|n| name_text(n.name()))
                    .ok_or(GraphqlError::Syntax)?;
                let set = f.selection_set().ok_or(GraphqlError::Syntax)?;
                if fragments.insert(name, set).is_some() {
                    return Err(GraphqlError::DuplicateFragment);
                }
            }
            _ => return Err(GraphqlError::NonExecutable),
        }
    }

    // Operation names must be unique, and an anonymous operation must be
    // alone (GraphQL validation); anything else is ambiguous, so refuse it.
    let mut seen = HashSet::new();
    for (name, _) in &ops {
        match name {
            Some(n) if !seen.insert(n.as_str()) => return Err(GraphqlError::DuplicateOperation),
            Some(_) => {}
            None if ops.len() > 1 => return Err(GraphqlError::AnonymousOperationNotAlone),
            None => {}
        }
    }

    let operation_name = operation_name.filter(|n| !n.is_empty());
    let (name, op) = match (ops.len(), operation_name) {
        (0, _) => return Err(GraphqlError::NoOperation),
        (1, None) => ops.swap_remove(0),
        (_, None) => return Err(GraphqlError::OperationNameRequired),
        (_, Some(want)) => {
            let i = ops
                .iter()
                .position(|(n, _)| n.as_deref() == Some(want))
                .ok_or(GraphqlError::UnknownOperation)?;
            ops.swap_remove(i)
        }
    };
    let op_type = op_type(&op)?;
    let set = op.selection_set().ok_or(GraphqlError::Syntax)?;

    let mut walk = Walk {
        fragments: &fragments,
        stack: Vec::new(),
        done: HashSet::new(),
        expansions: 0,
        counted: 0,
        fields: Vec::new(),
    };
    walk.selection_set(&set, 0)?;
    let mut root_fields = walk.fields;
    root_fields.sort_unstable();
    root_fields.dedup();
    if root_fields.is_empty() {
        return Err(GraphqlError::NoRootFields);
    }
    Ok(ClassifiedOperation {
        op_type,
        name,
        root_fields,
    })
}

/// Collects the root fields of one selection set, expanding fragments.
struct Walk<'a> {
    fragments: &'a HashMap<String, cst::SelectionSet>,
    /// Fragments being expanded (cycle detection).
    stack: Vec<String>,
    /// Fragments already expanded at the root: spreading one again adds nothing.
    done: HashSet<String>,
    expansions: usize,
    counted: usize,
    fields: Vec<String>,
}

impl Walk<'_> {
    fn expansion(&mut self, depth: usize) -> Result<(), GraphqlError> {
        self.expansions += 1;
        if depth >= MAX_FRAGMENT_DEPTH || self.expansions > MAX_FRAGMENT_EXPANSIONS {
            return Err(GraphqlError::TooComplex);
        }
        Ok(())
    }

    fn selection_set(&mut self, set: &cst::SelectionSet, depth: usize) -> Result<(), GraphqlError> {
        for sel in set.selections() {
            match sel {
                cst::Selection::Field(f) => {
                    self.counted += 1;
                    if self.counted > MAX_ROOT_FIELDS {
                        return Err(GraphqlError::TooComplex);
                    }
                    // The field's own name, never its alias.
                    let name = name_text(f.name()).ok_or(GraphqlError::Syntax)?;
                    self.fields.push(name);
                }
                cst::Selection::InlineFragment(inline) => {
                    self.expansion(depth)?;
                    let inner = inline.selection_set().ok_or(GraphqlError::Syntax)?;
                    self.selection_set(&inner, depth + 1)?;
                }
                cst::Selection::FragmentSpread(spread) => {
                    let name = spread
                        .fragment_name()
                        .and_then(|n| name_text(n.name()))
                        .ok_or(GraphqlError::Syntax)?;
                    if self.stack.contains(&name) {
                        return Err(GraphqlError::FragmentCycle);
                    }
                    let fragments = self.fragments;
                    let inner = fragments.get(&name).ok_or(GraphqlError::UnknownFragment)?;
                    if self.done.contains(&name) {
                        continue;
                    }
                    self.expansion(depth)?;
                    self.stack.push(name);
                    self.selection_set(inner, depth + 1)?;
                    if let Some(name) = self.stack.pop() {
                        self.done.insert(name);
                    }
                }
            }
        }
        Ok(())
    }
}
