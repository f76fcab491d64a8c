const features = ["App Router", "Server Components", "Route Handlers"];

export default function Home() {
  return (
    <main className="container">
      <h1>Hello from Next.js</h1>
      <p className="marker">corpus:nextjs-app</p>
      <ul>
        {features.map((feature) => (
          <li key={feature}>{feature}</li>
        ))}
      </ul>
    </main>
  );
}
