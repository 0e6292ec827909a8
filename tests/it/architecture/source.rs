//! Reading a package's src/ the way the compiler finds it: which files
//! there are, which module each defines, how long each is outside test
//! code, and the arrows their `crate::`/`super::`/`self::` paths make.
//!
//! Input: a package directory; the walk starts at src/lib.rs and
//! src/main.rs and follows their non-test `mod` declarations (`x.rs`,
//! `x/mod.rs`, `#[path]`). Output: a [`Source`]. It reads files and parses
//! them with syn; it judges nothing (that is the checker's part).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use syn::{Attribute, Ident, ImplItem, Item, Meta, TraitItem, UseTree, Visibility};

/// What the checker needs to know about a package's src/.
pub struct Source {
    /// Every file reached from the crate roots, test files aside.
    pub files: Vec<FileFacts>,
    /// Every arrow from one file to another, sorted.
    pub arrows: Vec<Arrow>,
    /// Files that could not be found, read or parsed.
    pub unreadable: Vec<Unreadable>,
}

/// One file of src/.
pub struct FileFacts {
    /// Relative to the package, e.g. `src/report/model.rs`.
    pub path: String,
    /// The top-level module it belongs to, shown as `src/x.rs` or `src/x/`;
    /// `None` for the crate roots.
    pub top_level: Option<String>,
    /// Its lines outside test code.
    pub lines: usize,
}

/// A file the checker could not read, so its verdict is incomplete.
pub struct Unreadable {
    /// The file, or the file whose `mod` names a missing one.
    pub file: String,
    /// What went wrong.
    pub reason: String,
}

/// One path that makes a file depend on another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrow {
    /// The file that writes the path.
    pub from: String,
    /// Its line there.
    pub line: usize,
    /// The path as written, e.g. `crate::report::model::Report`.
    pub path: String,
    /// The file defining the longest module prefix the path names.
    pub to: String,
}

/// Reads the package in `package`.
pub fn read(package: &Path) -> Source {
    let mut unreadable = Vec::new();
    let tree = Tree::load(package, &mut unreadable);
    let mut arrows = Vec::new();
    let mut files = Vec::new();
    for file in &tree.files {
        let mut reader = Reader {
            tree: &tree,
            file,
            module: file.module.clone(),
            arrows: Vec::new(),
            test_lines: 0,
        };
        reader.visit_file(&file.syntax);
        arrows.extend(reader.arrows);
        files.push(FileFacts {
            path: file.path.clone(),
            top_level: tree.top_level(file),
            lines: file.lines.saturating_sub(reader.test_lines),
        });
    }
    arrows.sort();
    arrows.dedup();
    Source {
        files,
        arrows,
        unreadable,
    }
}

/// The two crates of a package, each with its own module tree: `crate::`
/// in a module of the binary means main.rs, not lib.rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Crate {
    Lib,
    Bin,
}

/// A module's path from its crate's root: `["report", "model"]`.
type ModulePath = Vec<String>;

/// A file of src/ as the compiler reaches it.
struct SourceFile {
    /// Relative to the package, e.g. `src/report/model.rs`.
    path: String,
    krate: Crate,
    /// The module the file defines.
    module: ModulePath,
    syntax: syn::File,
    /// Lines in the file, test code included.
    lines: usize,
}

/// Every module of both crates and the file that defines it.
struct Tree {
    files: Vec<SourceFile>,
    /// Inline modules map to the file that holds them.
    modules: HashMap<(Crate, ModulePath), String>,
}

/// A module declared with `mod x;`, waiting to be read.
struct Pending {
    krate: Crate,
    module: ModulePath,
    path: PathBuf,
    /// Whether the file's children live in its own directory (lib.rs,
    /// main.rs, mod.rs, a `#[path]` file) rather than in a directory named
    /// after it.
    owns_dir: bool,
}

/// Where the `mod` declarations of a stretch of items look for files.
struct Scope<'a> {
    krate: Crate,
    file: &'a Path,
    module: ModulePath,
    /// Where `mod x;` looks for x.rs and x/mod.rs.
    children: PathBuf,
    /// What `#[path = "…"]` is relative to.
    path_base: PathBuf,
}

impl Tree {
    /// Reads src/lib.rs, src/main.rs and every non-test module they reach;
    /// files that cannot be found, read or parsed go to `unchecked`.
    fn load(package: &Path, unreadable: &mut Vec<Unreadable>) -> Tree {
        let mut tree = Tree {
            files: Vec::new(),
            modules: HashMap::new(),
        };
        let mut queue: VecDeque<Pending> =
            [(Crate::Lib, "src/lib.rs"), (Crate::Bin, "src/main.rs")]
                .into_iter()
                .filter(|(_, root)| package.join(root).is_file())
                .map(|(krate, root)| Pending {
                    krate,
                    module: Vec::new(),
                    path: PathBuf::from(root),
                    owns_dir: true,
                })
                .collect();
        while let Some(pending) = queue.pop_front() {
            let shown = display(&pending.path);
            let text = match std::fs::read_to_string(package.join(&pending.path)) {
                Ok(text) => text,
                Err(e) => {
                    unreadable.push(Unreadable {
                        file: shown,
                        reason: format!("cannot read it: {e}"),
                    });
                    continue;
                }
            };
            let syntax = match syn::parse_file(&text) {
                Ok(syntax) => syntax,
                Err(e) => {
                    unreadable.push(Unreadable {
                        file: shown,
                        reason: format!("line {}: {e}", e.span().start().line),
                    });
                    continue;
                }
            };
            tree.modules
                .insert((pending.krate, pending.module.clone()), shown.clone());
            let here = pending.path.parent().unwrap_or(Path::new("")).to_path_buf();
            let children = if pending.owns_dir {
                here.clone()
            } else {
                here.join(pending.path.file_stem().unwrap_or_default())
            };
            let scope = Scope {
                krate: pending.krate,
                file: &pending.path,
                module: pending.module.clone(),
                children,
                path_base: here,
            };
            tree.declare(package, &syntax.items, &scope, &mut queue, unreadable);
            tree.files.push(SourceFile {
                path: shown,
                krate: pending.krate,
                module: pending.module,
                syntax,
                lines: text.lines().count(),
            });
        }
        tree
    }

    /// Registers the modules `items` declare: inline ones as part of the
    /// scope's file, out-of-line ones queued to be read. Test modules are
    /// left out, so their files are never read.
    fn declare(
        &mut self,
        package: &Path,
        items: &[Item],
        scope: &Scope<'_>,
        queue: &mut VecDeque<Pending>,
        unreadable: &mut Vec<Unreadable>,
    ) {
        for item in items {
            let Item::Mod(decl) = item else { continue };
            if is_test_only(&decl.attrs) {
                continue;
            }
            let name = name(&decl.ident);
            let mut module = scope.module.clone();
            module.push(name.clone());
            let path_attr = path_attribute(&decl.attrs);
            match &decl.content {
                Some((_, inner)) => {
                    self.modules
                        .insert((scope.krate, module.clone()), display(scope.file));
                    let dir = scope.children.join(path_attr.unwrap_or(name));
                    let inner_scope = Scope {
                        krate: scope.krate,
                        file: scope.file,
                        module,
                        children: dir.clone(),
                        path_base: dir,
                    };
                    self.declare(package, inner, &inner_scope, queue, unreadable);
                }
                None => {
                    let found = match path_attr {
                        Some(p) => Some((scope.path_base.join(p), true)),
                        None => {
                            let flat = scope.children.join(format!("{name}.rs"));
                            let nested = scope.children.join(&name).join("mod.rs");
                            if package.join(&flat).is_file() {
                                Some((flat, false))
                            } else if package.join(&nested).is_file() {
                                Some((nested, true))
                            } else {
                                unreadable.push(Unreadable {
                                    file: display(scope.file),
                                    reason: format!(
                                        "it declares `mod {name};` but neither {} nor {} exists",
                                        display(&flat),
                                        display(&nested),
                                    ),
                                });
                                None
                            }
                        }
                    };
                    if let Some((path, owns_dir)) = found {
                        queue.push_back(Pending {
                            krate: scope.krate,
                            module,
                            path,
                            owns_dir,
                        });
                    }
                }
            }
        }
    }

    /// The file a path points at: the one defining the longest module
    /// prefix it names. `None` for paths not starting with `crate`,
    /// `super` or `self`, and for `super` above the crate root.
    fn resolve(&self, krate: Crate, current: &[String], segments: &[String]) -> Option<&String> {
        let (first, rest) = segments.split_first()?;
        let mut module: ModulePath = match first.as_str() {
            "crate" => Vec::new(),
            "self" => current.to_vec(),
            "super" => {
                let mut parent = current.to_vec();
                parent.pop()?;
                parent
            }
            _ => return None,
        };
        let mut rest = rest.iter().peekable();
        while rest.next_if(|s| *s == "super").is_some() {
            module.pop()?;
        }
        for segment in rest {
            module.push(segment.clone());
            if !self.modules.contains_key(&(krate, module.clone())) {
                module.pop();
                break;
            }
        }
        self.modules.get(&(krate, module))
    }

    /// The top-level module a file belongs to, shown as `src/x.rs` or
    /// `src/x/`; `None` for the crate roots.
    fn top_level(&self, file: &SourceFile) -> Option<String> {
        let first = file.module.first()?;
        let path = self.modules.get(&(file.krate, vec![first.clone()]))?;
        Some(match path.strip_suffix("mod.rs") {
            Some(dir) => dir.to_string(),
            None => path.clone(),
        })
    }
}

/// Walks one file's code outside tests, collecting its arrows and the
/// lines its test code takes.
struct Reader<'a> {
    tree: &'a Tree,
    file: &'a SourceFile,
    /// The module being read: the file's own or an inline one inside it.
    module: ModulePath,
    arrows: Vec<Arrow>,
    test_lines: usize,
}

impl Reader<'_> {
    /// Records a path as an arrow when it points at another file.
    fn record(&mut self, segments: &[String], line: usize) {
        let to = self.tree.resolve(self.file.krate, &self.module, segments);
        if let Some(to) = to.filter(|to| **to != self.file.path) {
            self.arrows.push(Arrow {
                from: self.file.path.clone(),
                line,
                path: segments.join("::"),
                to: to.clone(),
            });
        }
    }

    /// Whether a node is test code (then its lines are counted as such and
    /// it is not read).
    fn skip_test(&mut self, attrs: &[Attribute], node: &impl Spanned) -> bool {
        if !is_test_only(attrs) {
            return false;
        }
        let span = node.span();
        self.test_lines += span.end().line - span.start().line + 1;
        true
    }

    /// Records every leaf of a `use` tree: `use crate::{a::X, b::{self, Y}}`
    /// is `crate::a::X`, `crate::b` and `crate::b::Y`.
    fn use_tree(&mut self, tree: &UseTree, prefix: &mut Vec<String>) {
        match tree {
            UseTree::Path(p) => {
                prefix.push(name(&p.ident));
                self.use_tree(&p.tree, prefix);
                prefix.pop();
            }
            UseTree::Name(leaf) => self.use_leaf(&leaf.ident, prefix),
            UseTree::Rename(leaf) => self.use_leaf(&leaf.ident, prefix),
            UseTree::Glob(glob) => self.record(prefix, line(glob.span())),
            UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(tree, prefix);
                }
            }
        }
    }

    fn use_leaf(&mut self, ident: &Ident, prefix: &mut Vec<String>) {
        if ident == "self" {
            self.record(prefix, line(ident.span()));
        } else {
            prefix.push(name(ident));
            self.record(prefix, line(ident.span()));
            prefix.pop();
        }
    }

    /// Records the paths in a macro's tokens: syn cannot parse a macro's
    /// input in general, but a path is a run of `ident :: ident`, whatever
    /// the macro does with it (`$crate::…` included).
    fn scan(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut at = 0;
        while at < tokens.len() {
            if let TokenTree::Group(group) = &tokens[at] {
                self.scan(group.stream());
                at += 1;
                continue;
            }
            let (segments, line, end) = path_at(&tokens, at);
            if segments.len() > 1 {
                self.record(&segments, line);
            }
            at = end.max(at + 1);
        }
    }
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if !self.skip_test(item_attrs(item), item) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(i) => &i.attrs[..],
            ImplItem::Fn(i) => &i.attrs,
            ImplItem::Type(i) => &i.attrs,
            ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !self.skip_test(attrs, item) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        let attrs = match item {
            TraitItem::Const(i) => &i.attrs[..],
            TraitItem::Fn(i) => &i.attrs,
            TraitItem::Type(i) => &i.attrs,
            TraitItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !self.skip_test(attrs, item) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(name(&item.ident));
        visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if item.leading_colon.is_none() {
            self.use_tree(&item.tree, &mut Vec::new());
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        // One segment is `self` the value, or a visibility; never an import.
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments: Vec<String> = path.segments.iter().map(|s| name(&s.ident)).collect();
            self.record(&segments, line(path.segments[0].ident.span()));
        }
        visit::visit_path(self, path);
    }

    /// `pub(crate)`, `pub(super)` and `pub(in crate::x)` restrict who sees
    /// an item; they import nothing.
    fn visit_visibility(&mut self, _: &'ast Visibility) {}

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.scan(mac.tokens.clone());
    }
}

/// The `a::b::c` path starting at `tokens[start]` (empty if none), the
/// line it starts on and the index after it.
fn path_at(tokens: &[TokenTree], start: usize) -> (Vec<String>, usize, usize) {
    let line = line(tokens[start].span());
    let mut segments = Vec::new();
    let mut end = start;
    while let Some(TokenTree::Ident(ident)) = tokens.get(end) {
        segments.push(name(ident));
        end += 1;
        let separator = matches!(
            (tokens.get(end), tokens.get(end + 1)),
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
        );
        if !separator {
            break;
        }
        end += 2;
    }
    (segments, line, end)
}

/// Whether attributes make an item test code: `#[cfg(test)]`, or
/// `#[cfg(all(test, …))]`.
fn is_test_only(attrs: &[Attribute]) -> bool {
    fn requires_test(meta: &Meta) -> bool {
        match meta {
            Meta::Path(p) => p.is_ident("test"),
            Meta::List(list) if list.path.is_ident("all") => list
                .parse_args_with(Punctuated::<Meta, syn::Token![,]>::parse_terminated)
                .is_ok_and(|all| all.iter().any(requires_test)),
            _ => false,
        }
    }
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<Meta>().is_ok_and(|m| requires_test(&m))
    })
}

/// The value of a `#[path = "…"]` attribute.
fn path_attribute(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// An identifier as a module or file name (`r#type` is `type`).
fn name(ident: &Ident) -> String {
    ident.unraw().to_string()
}

fn line(span: Span) -> usize {
    span.start().line
}

/// A package-relative path as shown in messages, with `/` separators.
fn display(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
