import "./globals.css";

export const metadata = {
  title: "Next.js app",
  description: "A minimal Next.js App Router site",
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
