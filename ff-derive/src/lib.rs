//! `#[derive(Config)]` for ff: each field of a struct is a setting (a typed flag),
//! declared once. Use it through `ff_core::Config`; the attributes are documented
//! on `ff_core::Settings`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Expr, Fields, Ident, LitStr, Token, Type, parse_macro_input};

/// A struct of settings, each field a flag. See `ff_core::Settings`.
///
/// On the struct: `#[ff(prefix = "BOOKING_")]` (put before every derived key) and
/// `#[ff(rule = "rate_min <= rate_max")]` (any number; `<`, `<=`, `>`, `>=`, `==`, `!=`
/// between two fields of the same type). On a field: `default = ...` (required),
/// `min = ...`, `max = ...`, `one_of = [...]`, `key = "..."` (instead of the field name
/// in capitals), `kind = release | experiment | ops | kill_switch | permission | config`
/// (default `config`), `owner = "..."`, `expires = "YYYY-MM-DD"`, `permanent`,
/// `temporary`; or `nested` for a field that is itself a derived struct. The doc
/// comment is the description.
#[proc_macro_derive(Config, attributes(ff))]
pub fn derive_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(Error::into_compile_error).into()
}

/// An enum of unit variants as a setting's type: stored as the variant's name (or its
/// `#[ff(name = "...")]`), the names its allowed values, offered as a select in the
/// admin page. The enum must also derive `Clone` and `Copy`.
#[proc_macro_derive(SettingEnum, attributes(ff))]
pub fn derive_setting_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_enum(&input).unwrap_or_else(Error::into_compile_error).into()
}

fn expand_enum(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(Error::new(input.generics.span(), "derive(SettingEnum) takes no generic parameters"));
    }
    let Data::Enum(data) = &input.data else {
        return Err(Error::new(name.span(), "derive(SettingEnum) is for enums of unit variants"));
    };
    if data.variants.is_empty() {
        return Err(Error::new(name.span(), "derive(SettingEnum) needs at least one variant"));
    }
    let mut variants = Vec::new();
    for v in &data.variants {
        if !matches!(v.fields, Fields::Unit) {
            return Err(Error::new(
                v.ident.span(),
                "a setting's enum has unit variants only (stored as their names)",
            ));
        }
        let mut stored = v.ident.to_string();
        for attr in v.attrs.iter().filter(|a| a.path().is_ident("ff")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() {
                        return Err(Error::new(lit.span(), "a variant's name is not empty"));
                    }
                    stored = lit.value();
                    Ok(())
                } else {
                    Err(meta.error("unknown ff attribute on a variant: expected `name`"))
                }
            })?;
        }
        if let Some((other, _)) = variants.iter().find(|(_, s): &&(Ident, String)| *s == stored) {
            let this = &v.ident;
            return Err(Error::new(
                this.span(),
                format!("`{this}` would be stored as {stored:?}, as `{other}` is"),
            ));
        }
        variants.push((v.ident.clone(), stored));
    }
    let idents: Vec<&Ident> = variants.iter().map(|(i, _)| i).collect();
    let names: Vec<&String> = variants.iter().map(|(_, s)| s).collect();
    Ok(quote! {
        impl ::ff_core::FlagType for #name {
            const TYPE: ::ff_core::ValueType = ::ff_core::ValueType::String;
            type Decl = Self;

            fn from_value(value: &::ff_core::Value) -> ::std::option::Option<Self> {
                match value {
                    ::ff_core::Value::String(s) => match &**s {
                        #(#names => ::std::option::Option::Some(#name::#idents),)*
                        _ => ::std::option::Option::None,
                    },
                    _ => ::std::option::Option::None,
                }
            }

            fn from_decl(decl: Self) -> Self {
                decl
            }

            fn decl_value(decl: Self) -> ::ff_core::Value {
                ::ff_core::Value::String(match decl { #(#name::#idents => #names,)* }.into())
            }

            fn to_value(&self) -> ::ff_core::Value {
                <Self as ::ff_core::FlagType>::decl_value(*self)
            }

            fn within(&self, _: ::std::option::Option<Self>, _: ::std::option::Option<Self>, allowed: &[Self]) -> bool {
                let name = |v: &Self| match v { #(#name::#idents => #names,)* };
                allowed.is_empty() || allowed.iter().any(|a| name(a) == name(self))
            }

            fn decl_bound(_: Self) -> ::std::option::Option<::ff_core::__private::Number> {
                ::std::option::Option::None
            }

            fn type_allowed() -> ::std::vec::Vec<::ff_core::__private::JsonValue> {
                ::std::vec![#(::ff_core::__private::JsonValue::from(#names)),*]
            }
        }
    })
}

/// One field: a setting, or a nested struct.
enum Item {
    Setting(Box<Setting>),
    Nested { field: Ident, ty: Box<Type> },
}

struct Setting {
    field: Ident,
    ty: Type,
    key: String,
    konst: Ident,
    default: Expr,
    calls: Vec<Tokens>,
}

struct Rule {
    left: Ident,
    op: Ident,
    right: Ident,
    span: Span,
}

const KINDS: [(&str, &str); 6] = [
    ("release", "Release"),
    ("experiment", "Experiment"),
    ("ops", "Ops"),
    ("kill_switch", "KillSwitch"),
    ("permission", "Permission"),
    ("config", "Config"),
];

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(Error::new(input.generics.span(), "derive(Config) takes no generic parameters"));
    }
    let Data::Struct(data) = &input.data else {
        return Err(Error::new(name.span(), "derive(Config) is for structs whose fields are settings"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(Error::new(name.span(), "derive(Config) needs a struct with named fields"));
    };
    let (prefix, rule_texts) = struct_attrs(input)?;
    let mut items = Vec::new();
    for field in &fields.named {
        items.push(field_item(field, &prefix)?);
    }
    check_unique(&items)?;
    let rules = rule_texts.iter().map(|r| parse_rule(r, &items)).collect::<syn::Result<Vec<_>>>()?;

    let vis = &input.vis;
    let consts = items.iter().filter_map(|i| match i {
        Item::Setting(s) => Some(&**s),
        Item::Nested { .. } => None,
    });
    let consts = consts.map(|s| {
        let Setting { ty, key, konst, default, calls, field, .. } = s;
        let doc = format!("The key of `{field}`: `{key}`.");
        quote_spanned! {field.span()=>
            #[doc = #doc]
            #vis const #konst: ::ff_core::Flag<#ty> = ::ff_core::Flag::<#ty>::new(#key, #default) #(#calls)*;
        }
    });
    let built = items.iter().map(|i| match i {
        Item::Setting(s) => {
            let (field, konst) = (&s.field, &s.konst);
            quote! { #field: flags.get(Self::#konst) }
        }
        Item::Nested { field, ty } => quote! { #field: <#ty as ::ff_core::Config>::from_flags(flags) },
    });
    let defaults = items.iter().map(|i| match i {
        Item::Setting(s) => {
            let (field, konst) = (&s.field, &s.konst);
            quote! { #field: Self::#konst.default_value() }
        }
        Item::Nested { field, ty } => quote! { #field: <#ty as ::ff_core::Settings>::defaults() },
    });
    let decls = items.iter().map(|i| match i {
        Item::Setting(s) => {
            let konst = &s.konst;
            quote! { decls.push(Self::#konst.decl()); }
        }
        Item::Nested { ty, .. } => quote! { decls.extend(<#ty as ::ff_core::Settings>::declarations()); },
    });
    let nested_rules = items.iter().filter_map(|i| match i {
        Item::Nested { ty, .. } => Some(quote! { rules.extend(<#ty as ::ff_core::Settings>::rules()); }),
        Item::Setting(_) => None,
    });
    let key_of = |field: &Ident| {
        items.iter().find_map(|i| match i {
            Item::Setting(s) if s.field == *field => Some(s.konst.clone()),
            _ => None,
        })
    };
    let rule_values: Vec<Tokens> = rules
        .iter()
        .map(|r| {
            let (l, op, rr) = (key_of(&r.left), &r.op, key_of(&r.right));
            quote! { ::ff_core::SettingRule { left: Self::#l.key(), op: ::ff_core::RuleOp::#op, right: Self::#rr.key() } }
        })
        .collect();
    let checks = rules.iter().map(|r| {
        let (left, op, right) = (&r.left, &r.op, &r.right);
        let (l, rr) = (key_of(left), key_of(right));
        quote_spanned! {r.span=>
            if !::ff_core::RuleOp::#op.holds(&self.#left, &self.#right) {
                return ::std::option::Option::Some(::ff_core::BrokenRule {
                    config: <Self as ::ff_core::Settings>::NAME,
                    rule: ::ff_core::SettingRule { left: Self::#l.key(), op: ::ff_core::RuleOp::#op, right: Self::#rr.key() },
                    left: ::ff_core::FlagType::to_value(&self.#left),
                    right: ::ff_core::FlagType::to_value(&self.#right),
                });
            }
        }
    });
    let nested_checks = items.iter().filter_map(|i| match i {
        Item::Nested { field, ty } => Some(quote! {
            if let ::std::option::Option::Some(b) = <#ty as ::ff_core::Settings>::broken_rule(&self.#field) {
                return ::std::option::Option::Some(b);
            }
        }),
        Item::Setting(_) => None,
    });
    let name_str = name.to_string();
    let test_name = format_ident!("{}Test", name);
    let test_doc = format!("Test values for [`{name}`], one typed method per setting (`{name}::test()`).");
    let setters = items.iter().map(|i| match i {
        Item::Setting(s) => {
            let (field, konst, ty) = (&s.field, &s.konst, &s.ty);
            let doc = format!("Sets `{}`.", s.key);
            quote! {
                #[doc = #doc]
                #vis fn #field(self, value: #ty) -> Self {
                    #test_name(self.0.set(#name::#konst, value))
                }
            }
        }
        Item::Nested { field, ty } => quote! {
            #[doc = "Sets the nested struct's values."]
            #vis fn #field(self, values: <#ty as ::ff_core::Settings>::Test) -> Self {
                #test_name(self.0.extend(values))
            }
        },
    });
    Ok(quote! {
        #[doc = #test_doc]
        #[derive(Debug, Clone, Default, PartialEq)]
        #vis struct #test_name(::ff_core::TestValues);

        impl #test_name {
            #(#setters)*
        }

        impl ::std::ops::Deref for #test_name {
            type Target = ::ff_core::TestValues;
            fn deref(&self) -> &::ff_core::TestValues {
                &self.0
            }
        }

        impl ::std::convert::From<#test_name> for ::ff_core::TestValues {
            fn from(t: #test_name) -> ::ff_core::TestValues {
                t.0
            }
        }

        impl #name {
            #(#consts)*

            /// Test values for this struct, one typed method per setting.
            #vis fn test() -> #test_name {
                ::std::default::Default::default()
            }
        }

        impl ::ff_core::Config for #name {
            fn from_flags(flags: &::ff_core::ConfigReader<'_>) -> Self {
                ::ff_core::Settings::checked(#name { #(#built,)* })
            }
        }

        impl ::ff_core::Settings for #name {
            const NAME: &'static str = #name_str;
            type Test = #test_name;

            fn declarations() -> ::std::vec::Vec<::ff_core::FlagDecl> {
                let mut decls = ::std::vec::Vec::new();
                #(#decls)*
                // Nested structs' rules are on their settings already; attaching is idempotent.
                ::ff_core::attach_rules(&mut decls, &<Self as ::ff_core::Settings>::rules());
                decls
            }

            fn defaults() -> Self {
                #name { #(#defaults,)* }
            }

            fn rules() -> ::std::vec::Vec<::ff_core::SettingRule> {
                let mut rules = ::std::vec![#(#rule_values),*];
                #(#nested_rules)*
                rules
            }

            fn broken_rule(&self) -> ::std::option::Option<::ff_core::BrokenRule> {
                #(#checks)*
                #(#nested_checks)*
                ::std::option::Option::None
            }
        }

        ::ff_core::__private::inventory::submit! {
            ::ff_core::Declared::settings::<#name>(::std::concat!(::std::file!(), ":", ::std::line!()))
        }
    })
}

/// `prefix` and the rules, from the struct's `#[ff(...)]`.
fn struct_attrs(input: &DeriveInput) -> syn::Result<(String, Vec<LitStr>)> {
    let mut prefix = String::new();
    let mut rules = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("ff")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("prefix") {
                let lit: LitStr = meta.value()?.parse()?;
                prefix = lit.value();
                check_key_chars(&prefix, lit.span(), "prefix")?;
            } else if meta.path.is_ident("rule") {
                rules.push(meta.value()?.parse()?);
            } else {
                return Err(meta.error("unknown ff attribute on a struct: expected `prefix` or `rule`"));
            }
            Ok(())
        })?;
    }
    Ok((prefix, rules))
}

fn field_item(field: &syn::Field, prefix: &str) -> syn::Result<Item> {
    let Some(ident) = field.ident.clone() else {
        return Err(Error::new(field.span(), "derive(Config) needs named fields"));
    };
    let bare = ident.to_string().trim_start_matches("r#").to_owned();
    let mut key = None;
    let mut default = None;
    let mut nested = false;
    let mut kind = None;
    let mut calls = Vec::new();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("ff")) {
        attr.parse_nested_meta(|meta| {
            let p = &meta.path;
            if p.is_ident("default") {
                default = Some(meta.value()?.parse::<Expr>()?);
            } else if p.is_ident("min") || p.is_ident("max") {
                let call = p.get_ident().cloned();
                let v: Expr = meta.value()?.parse()?;
                calls.push(quote! { .#call(#v) });
            } else if p.is_ident("one_of") {
                let value = meta.value()?;
                let content;
                syn::bracketed!(content in value);
                let values = Punctuated::<Expr, Token![,]>::parse_terminated(&content)?;
                if values.is_empty() {
                    return Err(meta.error("`one_of` needs at least one value"));
                }
                let values = values.iter();
                calls.push(quote! { .one_of(&[#(#values),*]) });
            } else if p.is_ident("key") {
                let lit: LitStr = meta.value()?.parse()?;
                check_key_chars(&lit.value(), lit.span(), "key")?;
                key = Some(lit.value());
            } else if p.is_ident("kind") {
                let k: Ident = meta.value()?.parse()?;
                let Some((_, variant)) = KINDS.iter().find(|(s, _)| k == s) else {
                    let names: Vec<&str> = KINDS.iter().map(|(s, _)| *s).collect();
                    return Err(Error::new(
                        k.span(),
                        format!("unknown kind `{k}`: expected one of {}", names.join(", ")),
                    ));
                };
                kind = Some(format_ident!("{}", variant));
            } else if p.is_ident("owner") || p.is_ident("expires") {
                let call = p.get_ident().cloned();
                let lit: LitStr = meta.value()?.parse()?;
                calls.push(quote! { .#call(#lit) });
            } else if p.is_ident("permanent") || p.is_ident("temporary") {
                let call = p.get_ident().cloned();
                calls.push(quote! { .#call() });
            } else if p.is_ident("nested") {
                nested = true;
            } else {
                return Err(meta.error(
                    "unknown ff attribute on a field: expected default, min, max, one_of, key, kind, \
                     owner, expires, permanent, temporary or nested",
                ));
            }
            Ok(())
        })?;
    }
    if nested {
        if default.is_some() || key.is_some() || !calls.is_empty() || kind.is_some() {
            return Err(Error::new(
                ident.span(),
                "a `nested` field takes no other ff attribute: its struct declares its settings",
            ));
        }
        return Ok(Item::Nested { field: ident, ty: Box::new(field.ty.clone()) });
    }
    let Some(default) = default else {
        return Err(Error::new(
            ident.span(),
            format!(
                "setting `{bare}` has no default: add #[ff(default = ...)] (or #[ff(nested)] for a struct of settings)"
            ),
        ));
    };
    let key = key.unwrap_or_else(|| format!("{prefix}{}", bare.to_uppercase()));
    if key.len() > 128 {
        return Err(Error::new(ident.span(), format!("key `{key}` is longer than 128 characters")));
    }
    let description = doc(&field.attrs);
    if !description.is_empty() {
        calls.push(quote! { .description(#description) });
    }
    let kind = kind.unwrap_or_else(|| format_ident!("Config"));
    calls.push(quote! { .kind(::ff_core::FlagKind::#kind) });
    let konst = format_ident!("{}", bare.to_uppercase(), span = ident.span());
    Ok(Item::Setting(Box::new(Setting { field: ident, ty: field.ty.clone(), key, konst, default, calls })))
}

/// The doc comment, one line.
fn doc(attrs: &[syn::Attribute]) -> String {
    let lines = attrs.iter().filter(|a| a.path().is_ident("doc")).filter_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) => match &nv.value {
            Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value().trim().to_owned()),
            _ => None,
        },
        _ => None,
    });
    lines.filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn check_key_chars(key: &str, span: Span, what: &str) -> syn::Result<()> {
    if (what == "key" && key.is_empty())
        || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Error::new(
            span,
            format!("{what} `{key}`: a key is 1 to 128 characters of letters, digits, '_', '-' and '.'"),
        ));
    }
    Ok(())
}

fn check_unique(items: &[Item]) -> syn::Result<()> {
    let settings: Vec<&Setting> = items
        .iter()
        .filter_map(|i| match i {
            Item::Setting(s) => Some(&**s),
            Item::Nested { .. } => None,
        })
        .collect();
    for (i, s) in settings.iter().enumerate() {
        if let Some(first) = settings[..i].iter().find(|f| f.key == s.key) {
            return Err(Error::new(
                s.field.span(),
                format!(
                    "key `{}` is also the key of `{}`: give one of them its own #[ff(key = ...)]",
                    s.key, first.field
                ),
            ));
        }
    }
    Ok(())
}

/// `left op right`, both fields of this struct that are settings.
fn parse_rule(lit: &LitStr, items: &[Item]) -> syn::Result<Rule> {
    let text = lit.value();
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = |why: String| Error::new(lit.span(), why);
    let [left, op, right] = words[..] else {
        return Err(bad(format!("rule `{text}`: write `field op field`, e.g. `rate_min <= rate_max`")));
    };
    let op = match op {
        "<" => "Lt",
        "<=" => "Le",
        ">" => "Gt",
        ">=" => "Ge",
        "==" => "Eq",
        "!=" => "Ne",
        other => {
            return Err(bad(format!(
                "rule `{text}`: unknown comparison `{other}`: use <, <=, >, >=, == or !="
            )));
        }
    };
    let field = |name: &str| -> syn::Result<Ident> {
        let found = items.iter().find_map(|i| match i {
            Item::Setting(s) if s.field == name => Some(s.field.clone()),
            _ => None,
        });
        found.map(|f| Ident::new(&f.to_string(), lit.span())).ok_or_else(|| {
            bad(format!(
                "rule `{text}`: `{name}` is not a setting of this struct (rules compare two of its fields)"
            ))
        })
    };
    let (left, right) = (field(left)?, field(right)?);
    if left == right {
        return Err(bad(format!("rule `{text}` compares `{left}` with itself")));
    }
    Ok(Rule { left, op: Ident::new(op, lit.span()), right, span: lit.span() })
}
