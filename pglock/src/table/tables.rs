//! What [`lock_table`](crate::lock_table) accepts as its tables: one name, or a list of them.

use super::name::{ParseTableNameError, TableName};

/// One table or several, as [`lock_table`](crate::lock_table) takes them: a `&str` or `String`
/// (parsed as `[schema.]table`, see [`TableName`]'s `FromStr`), a [`TableName`], or an array,
/// `Vec` or slice of any of those (`["orders", "billing.invoices"]`, `&names[..]`).
///
/// Text that does not parse is reported when the lock is taken, as
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument), so building a lock never fails.
///
/// This trait is sealed: it is implemented for those types only.
pub trait IntoTables: sealed::Tables {}

impl<T: sealed::Tables> IntoTables for T {}

/// A table as given: parsed, or the reason it does not parse.
pub(crate) type Entry = Result<TableName, ParseTableNameError>;

mod sealed {
    use super::*;

    /// One or several tables.
    pub trait Tables {
        fn into_entries(self) -> Vec<Entry>;
    }

    /// Exactly one table.
    pub trait Table {
        fn into_entry(self) -> Entry;
    }

    impl Table for &str {
        fn into_entry(self) -> Entry {
            self.parse()
        }
    }

    impl Table for String {
        fn into_entry(self) -> Entry {
            self.parse()
        }
    }

    impl Table for &String {
        fn into_entry(self) -> Entry {
            self.parse()
        }
    }

    impl Table for TableName {
        fn into_entry(self) -> Entry {
            Ok(self)
        }
    }

    impl Table for &TableName {
        fn into_entry(self) -> Entry {
            Ok(self.clone())
        }
    }

    impl<T: Table> Tables for T {
        fn into_entries(self) -> Vec<Entry> {
            vec![self.into_entry()]
        }
    }

    impl<T: Table, const N: usize> Tables for [T; N] {
        fn into_entries(self) -> Vec<Entry> {
            self.into_iter().map(Table::into_entry).collect()
        }
    }

    impl<T: Table> Tables for Vec<T> {
        fn into_entries(self) -> Vec<Entry> {
            self.into_iter().map(Table::into_entry).collect()
        }
    }

    impl<T: Table + Clone> Tables for &[T] {
        fn into_entries(self) -> Vec<Entry> {
            self.iter().cloned().map(Table::into_entry).collect()
        }
    }

    impl<T: Table + Clone, const N: usize> Tables for &[T; N] {
        fn into_entries(self) -> Vec<Entry> {
            self.as_slice().into_entries()
        }
    }

    impl<T: Table + Clone> Tables for &Vec<T> {
        fn into_entries(self) -> Vec<Entry> {
            self.as_slice().into_entries()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tables: impl IntoTables) -> Vec<Entry> {
        tables.into_entries()
    }

    #[test]
    // The borrows are the point: they pick the impls for `&String` and `&[T; N]`.
    #[allow(clippy::needless_borrows_for_generic_args)]
    fn one_name_or_a_list_of_names() {
        let orders = Ok(TableName::unqualified("orders"));
        let invoices = Ok(TableName::new("billing", "invoices"));
        assert_eq!(entries("orders"), vec![orders.clone()]);
        assert_eq!(entries(String::from("orders")), vec![orders.clone()]);
        assert_eq!(entries(&String::from("orders")), vec![orders.clone()]);
        assert_eq!(
            entries(TableName::unqualified("orders")),
            vec![orders.clone()]
        );
        let both = [orders.clone(), invoices.clone()];
        assert_eq!(entries(["orders", "billing.invoices"]), both);
        assert_eq!(entries(&["orders", "billing.invoices"]), both);
        let owned = vec!["orders".to_owned(), "billing.invoices".to_owned()];
        assert_eq!(entries(&owned), both);
        assert_eq!(entries(&owned[..]), both);
        assert_eq!(entries(owned), both);
        let names = vec![
            TableName::unqualified("orders"),
            TableName::new("billing", "invoices"),
        ];
        assert_eq!(entries(&names[..]), both);
        assert_eq!(entries(names), both);
        assert!(entries(Vec::<&str>::new()).is_empty());
    }

    #[test]
    fn bad_text_is_kept_as_its_error() {
        let got = entries(["orders", "a.b.c"]);
        assert!(got[0].is_ok());
        assert!(got[1].is_err());
    }
}
